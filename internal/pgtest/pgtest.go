// Package pgtest starts a real, throwaway PostgreSQL server (Debian's
// packages, scripts/deps.sh installs them) for tests: its own data dir and
// port, run as an unprivileged user when the test runs as root, removed when
// the test ends. Unit tests of the fleet store and the e2e tests share it.
package pgtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// User is the superuser of every server; Password is in Server.Password.
const User = "clawd"

// Server is one running PostgreSQL cluster.
type Server struct {
	Dir      string // data dir (under a temp dir owned by the server's user)
	Port     int    // TCP port on 127.0.0.1
	Password string // of User; password authentication (scram) is required

	t    testing.TB
	bin  string
	cred *syscall.Credential // nil when not root
	root string
}

// Start initialises a new cluster and starts it on a free port of
// 127.0.0.1; the test fails if PostgreSQL is not installed (no skip: the
// project's deps install it). It is stopped and removed at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatalf("pgtest: %v (scripts/deps.sh installs postgresql)", err)
	}
	s := &Server{t: t, bin: bin}
	if os.Geteuid() == 0 {
		// postgres refuses to run as root: use Debian's postgres user, or
		// nobody where it does not exist.
		s.cred, err = unprivileged()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	s.root, err = os.MkdirTemp("", "clawd-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.root) })
	if err := os.Chmod(s.root, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		if err := os.Chown(s.root, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.Dir = filepath.Join(s.root, "data")
	s.Password = randHex(16)
	pw := filepath.Join(s.root, "pwfile")
	if err := os.WriteFile(pw, []byte(s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		os.Chown(pw, int(s.cred.Uid), int(s.cred.Gid))
	}
	if out, err := s.run("initdb", "-D", s.Dir, "-U", User, "--pwfile", pw, "--auth", "scram-sha-256",
		"-E", "UTF8", "--locale", "C", "--no-sync"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	os.Remove(pw)
	// Listen on loopback only; the socket directory is ours, not
	// /var/run/postgresql. fsync off: a test cluster, not a database.
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 200\n", s.root)
	f, err := os.OpenFile(filepath.Join(s.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	t.Cleanup(func() { s.stop(true) })
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		s.Port, err = freePort()
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("pgtest: start: %v", lastErr)
	return nil
}

// DSN is the URL of database db (User's password not included: tests give
// it as clawd does, from a file, or with WithPassword).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", User, s.Port, url.PathEscape(db))
}

// WithPassword is DSN with the password in it.
func (s *Server) WithPassword(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", User, url.QueryEscape(s.Password), s.Port, url.PathEscape(db))
}

// PasswordFile writes the password to a 0600 file under dir and returns its path.
func (s *Server) PasswordFile(dir string) string {
	p := filepath.Join(dir, "pg-password")
	if err := os.WriteFile(p, []byte(s.Password+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// CreateDB creates a new, empty database and returns its name.
func (s *Server) CreateDB(t testing.TB) string {
	t.Helper()
	name := "t_" + randHex(6)
	if out, err := s.psql("postgres", "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v\n%s", err, out)
	}
	return name
}

// SQL runs statements in database db with psql and returns its output
// (unaligned, tuples only).
func (s *Server) SQL(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := s.psql(db, sql)
	if err != nil {
		t.Fatalf("pgtest: psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Stop stops the server (fast shutdown: clients are disconnected); the
// data stays for Restart.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.stop(false); err != nil {
		s.t.Fatalf("pgtest: stop: %v", err)
	}
}

// Restart starts a stopped server again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("pgtest: restart: %v", err)
	}
}

func (s *Server) start() error {
	log := filepath.Join(s.root, "server.log")
	out, err := s.run("pg_ctl", "start", "-w", "-t", "60", "-D", s.Dir, "-l", log, "-o", "-p "+strconv.Itoa(s.Port))
	if err != nil {
		b, _ := os.ReadFile(log)
		return fmt.Errorf("%v\n%s\n%s", err, out, lastLines(b, 20))
	}
	return nil
}

func (s *Server) stop(quiet bool) error {
	if _, err := os.Stat(filepath.Join(s.Dir, "postmaster.pid")); err != nil {
		return nil // not running
	}
	out, err := s.run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", s.Dir)
	if err != nil && !quiet {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

func (s *Server) psql(db, sql string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", User, "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+s.Password, "PGSSLMODE=disable")
	return cmd.CombinedOutput()
}

func (s *Server) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.root
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + s.root}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.Bytes(), err
}

// binDir finds the newest installed server's bin directory.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	if len(dirs) > 0 {
		return filepath.Dir(dirs[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(r), nil
		}
	}
	return "", errors.New("PostgreSQL server not found (no /usr/lib/postgresql/*/bin/initdb)")
}

func version(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("no unprivileged user (postgres or nobody) to run PostgreSQL as")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
