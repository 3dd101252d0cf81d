package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Report is what Verify found in an audit log.
type Report struct {
	Lines  int // lines read
	Legacy int // lines before the chain starts that are not chain lines (an older clawd's)
	// FirstSeq and LastSeq are the chain's first and last seq in the file.
	FirstSeq, LastSeq int64
	// LinkedBefore: the first chain line links to a line that is not in
	// this file (the log was rotated): that one link is not checked.
	LinkedBefore bool
	Checkpoints  int   // checkpoint lines
	Signed       int   // checkpoints whose signature was verified (needs a key)
	SignedSeq    int64 // seq of the last verified checkpoint (0: none)
	// UnsignedTail counts the chain lines after the last verified
	// checkpoint (all of them without a key): nothing vouches for them but
	// the chain, which whoever can write the file can recompute, and lines
	// cut off the end leave no trace in it.
	UnsignedTail int
	Torn         []int // torn lines (a crash during their write) that the next line records
	Lost         int64 // lines the daemon could not write, as it recorded them (audit_lost)
	Files        int   // starts of a further file inside the input (concatenated files)
	Unchecked    []int // audit_unchecked lines: starts whose log end had no head file to be checked against
	// KeyChecked: Verify had a key, so the file must hold a checkpoint it
	// signed (OK is false without one: whoever can write the file can
	// recompute a whole chain without checkpoints).
	KeyChecked bool
	// HeadChecked: the file holds the head Verify was given (Head.Seq).
	HeadChecked int64
	// Problem is the first line that breaks the chain, nil if none does.
	Problem *Problem
}

// Head is a chain line a verifier knows must be in the file: the
// daemon's head when verifying began (clawd status), or one noted off the
// host. Lines cut off the end of a file leave no trace in it; against a
// head they do.
type Head struct {
	Seq  int64
	Hash string // hex SHA-256 of the line
}

// ParseHead reads "SEQ:HEX-SHA256".
func ParseHead(s string) (Head, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n <= 0 || !validHash(hash) {
		return Head{}, fmt.Errorf("head %q: want SEQ:SHA256 (clawd status shows the daemon's audit chain head)", s)
	}
	return Head{Seq: n, Hash: strings.ToLower(hash)}, nil
}

// OK reports whether the file verified and holds a chain to verify (a
// file without chain lines, empty or an older clawd's, proves nothing),
// with a key at least one checkpoint it signed.
func (rep Report) OK() bool {
	return rep.Problem == nil && rep.LastSeq > 0 && (!rep.KeyChecked || rep.Signed > 0)
}

// Problem names the first altered line and why Verify thinks so.
type Problem struct {
	Line int
	Why  string
}

func (p *Problem) Error() string { return fmt.Sprintf("line %d: %s", p.Line, p.Why) }

// maxVerifyLine bounds one line (the Logger never writes such lines).
const maxVerifyLine = 64 << 20

// chainHead is what Verify reads of each line.
type chainHead struct {
	Event      string `json:"event"`
	Time       string `json:"time"`
	FileStart  bool   `json:"file_start"`
	Every      int64  `json:"every"`
	IntervalMS int64  `json:"interval_ms"`
	Seq        int64  `json:"seq"`
	Prev       string `json:"prev"`
	Reason     string `json:"reason"`
	Count      int64  `json:"count"`
}

// Verify reads an audit log and checks its chain: every line's seq follows
// the one before and its prev is the SHA-256 of the line before; with pub,
// every checkpoint's signature. It stops at the first problem (in
// Report.Problem); the error is for reading r only.
func Verify(r io.Reader, pub ed25519.PublicKey) (Report, error) {
	return VerifyHead(r, pub, Head{})
}

// VerifyHead is Verify that also checks the file holds head (none if its
// Seq is 0): its line, unaltered, and so every line up to it.
func VerifyHead(r io.Reader, pub ed25519.PublicKey, head Head) (Report, error) {
	rep := Report{KeyChecked: pub != nil}
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		chained      bool
		havePrev     bool       // a line (chained or legacy) came before
		last, before [32]byte   // hashes of the last line and the one before it
		lastLine     int        // number of the last line in the chain
		every        int64      // lines between checkpoints at most, as the last signed one says
		torn         []tornLine // torn lines the next lines must record, in order
	)
	fail := func(line int, format string, a ...any) (Report, error) {
		rep.Problem = &Problem{Line: line, Why: fmt.Sprintf(format, a...)}
		return rep, nil
	}
	for {
		line, complete, err := readLine(br)
		if err != nil {
			return rep, err
		}
		if line == nil {
			break
		}
		rep.Lines++
		n := rep.Lines
		if !complete {
			return fail(n, "the file ends inside this line (no newline): cut off, or a write in progress")
		}
		h, ok := parseChainHead(line)
		if !ok {
			if len(torn) >= maxTorn {
				return fail(torn[0].line, "not a JSON line, and the next line does not record it as torn")
			}
			torn = append(torn, tornLine{line: n, size: len(line), sum: sha256.Sum256(line)})
			continue
		}
		sum := sha256.Sum256(line)
		if len(torn) > 0 && !(h.Event == EventCheckpoint && h.Seq > 0) { // a checkpoint may come between torn records
			if h.Seq == 0 || h.Event != EventTorn || h.Reason != fmt.Sprintf(tornFormat, torn[0].size, torn[0].sum[:]) {
				return fail(torn[0].line, "not a JSON line, and the next line does not record it as torn")
			}
			rep.Torn = append(rep.Torn, torn[0].line)
			torn = torn[1:]
		}
		if h.Seq == 0 {
			if chained {
				return fail(n, "no seq: a line without the chain's fields in the chain (inserted, or its fields removed)")
			}
			rep.Legacy++
			before, last, havePrev = last, sum, true
			continue
		}
		if h.Seq < 0 {
			return fail(n, "seq %d is negative", h.Seq)
		}
		if !chained {
			chained = true
			rep.FirstSeq = h.Seq
			switch {
			case h.Prev == "" && havePrev:
				return fail(n, "the chain starts here without a link to the %d line(s) before it", rep.Legacy)
			case h.Prev == "" && h.Seq != 1:
				return fail(n, "seq %d without prev: only the chain's first line (seq 1) has no prev", h.Seq)
			case h.Prev != "" && havePrev && h.Prev != hex.EncodeToString(last[:]):
				return fail(n-1, "altered: its SHA-256 is not the prev of line %d", n)
			case h.Prev != "" && !havePrev && !h.FileStart:
				return fail(n, "the file does not begin where clawd began it (its first line has no file_start): lines before it were removed, or it is only a part of a log")
			case h.Prev != "" && !havePrev:
				rep.LinkedBefore = true
				if !validHash(h.Prev) {
					return fail(n, "prev %q is not a hex SHA-256", h.Prev)
				}
			}
		} else {
			switch {
			case h.Seq == rep.LastSeq && h.Prev == hex.EncodeToString(before[:]):
				return fail(lastLine, "inserted: this line or line %d is, both have seq %d and follow the same line", n, h.Seq)
			case h.Seq <= rep.LastSeq:
				return fail(n, "seq %d after %d: a line inserted before it or lines moved (or this line's seq altered)", h.Seq, rep.LastSeq)
			case h.Seq > rep.LastSeq+1:
				return fail(n, "seq %d after %d: %d line(s) missing before it (deleted or moved), or this line's seq altered", h.Seq, rep.LastSeq, h.Seq-rep.LastSeq-1)
			case h.Prev == "":
				return fail(n, "no prev: the chain's fields of this line were altered")
			case h.Prev != hex.EncodeToString(last[:]):
				return fail(lastLine, "altered: its SHA-256 is not the prev of line %d (or line %d's prev was altered)", n, n)
			}
		}
		if h.FileStart && havePrev && rep.Legacy == 0 && n > 1 {
			rep.Files++ // a file's start inside the input: files concatenated
		}
		rep.LastSeq, lastLine = h.Seq, n
		if head.Seq != 0 && h.Seq == head.Seq {
			if hex.EncodeToString(sum[:]) != head.Hash {
				return fail(n, "seq %d is not the line the head names (sha256 %s): altered or replaced", h.Seq, head.Hash)
			}
			rep.HeadChecked = h.Seq
		}
		before, last, havePrev = last, sum, true
		switch h.Event {
		case EventCheckpoint:
			rep.Checkpoints++
			unsigned, sig, ok := splitSig(line)
			if !ok {
				return fail(n, "checkpoint without a valid signature field")
			}
			// A rotated file starts right after its predecessor's last
			// checkpoint: its first checkpoint covers every line before it.
			if rep.Checkpoints == 1 && rep.LinkedBefore && h.Count > h.Seq-rep.FirstSeq && h.Reason != ReasonOpenCheckpoint {
				return fail(1, "the checkpoint on line %d covers %d line(s) but the file has %d before it: lines before line 1 were removed (or this file is not the start of a rotated log)", n, h.Count, h.Seq-rep.FirstSeq)
			}
			if pub != nil {
				if !ed25519.Verify(pub, CheckpointMessage(unsigned), sig) {
					return fail(n, "checkpoint signature does not verify with this key: a forged checkpoint (or another key's), or a line between the signed checkpoint before it and this one was altered")
				}
				// A daemon started with a larger bound (or without a key)
				// may have written more: the larger of the two bounds.
				if bound := max(every, h.Every); every > 0 && int64(rep.UnsignedTail) > bound {
					return fail(n, "%d line(s) since the signed checkpoint before it, but clawd signs one every %d lines: checkpoints between them were removed", rep.UnsignedTail, bound)
				}
				if h.Every > 0 {
					every = h.Every
				}
				rep.Signed++
				rep.SignedSeq = h.Seq
				rep.UnsignedTail = 0
				continue
			}
		case EventLost:
			rep.Lost += h.Count
			// Counted against the checkpoint bound as the Logger does.
			rep.UnsignedTail += int(min(max(h.Count, 0), max(every, 1)))
		case EventUnchecked:
			// Fail closed: what came before could have been changed
			// while clawd, without its head file, could not tell.
			return fail(n, "clawd recorded here that it started without its head file (%s): changes made to the log while clawd was not writing it would not show; check the lines before it against a copy", h.Reason)
		case EventCut:
			return fail(n, "clawd recorded here, when it opened the log, that %s", h.Reason)
		}
		rep.UnsignedTail++
	}
	if len(torn) > 0 {
		return fail(torn[0].line, "not a JSON line (a torn line at the end, not yet recorded by a next line)")
	}
	if pub != nil && every > 0 && int64(rep.UnsignedTail) > every {
		return fail(lastLine, "the last %d line(s) have no signed checkpoint, but clawd signs one every %d lines: checkpoints among them were removed", rep.UnsignedTail, every)
	}
	if head.Seq != 0 && rep.HeadChecked == 0 && rep.LastSeq > 0 && head.Seq > rep.LastSeq {
		return fail(rep.Lines, "the file ends at seq %d but the chain's head is seq %d: %d line(s) cut off its end", rep.LastSeq, head.Seq, head.Seq-rep.LastSeq)
	}
	if head.Seq != 0 && rep.HeadChecked == 0 && rep.LastSeq > 0 && head.Seq < rep.FirstSeq {
		return fail(1, "the file starts after the head's seq %d: not the file the head is from (a later rotated file?)", head.Seq)
	}
	return rep, nil
}

// parseChainHead reads a line's chain fields; false if the line is no JSON
// object (a torn line). Logger.resume and Verify must agree on it.
func parseChainHead(line []byte) (h chainHead, ok bool) {
	if !bytes.HasPrefix(line, []byte("{")) || json.Unmarshal(line, &h) != nil {
		return chainHead{}, false
	}
	return h, true
}

type tornLine struct {
	line, size int
	sum        [32]byte
}

func validHash(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// readLine returns the next line without its newline, complete false if
// the input ended before one; nil at the end.
func readLine(br *bufio.Reader) (line []byte, complete bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if err == nil {
			return line[:len(line)-1], true, nil
		}
		if len(line) > maxVerifyLine {
			return nil, false, fmt.Errorf("a line longer than %d bytes", maxVerifyLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			if len(line) == 0 {
				return nil, false, nil
			}
			return line, false, nil
		}
		return nil, false, err
	}
}

// VerifyFile verifies the audit log at path ("-": standard input) with the
// public key in keyPath ("": the chain only).
func VerifyFile(path, keyPath string, head Head) (Report, error) {
	var pub ed25519.PublicKey
	if keyPath != "" {
		var err error
		if pub, err = LoadPublicKey(keyPath); err != nil {
			return Report{}, fmt.Errorf("--key: %w", err)
		}
	}
	r := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return Report{}, err
		}
		defer f.Close()
		r = f
	}
	return VerifyHead(r, pub, head)
}

// Write prints the report for a person: OK with counts, or the first
// altered line and why; and what the file cannot show.
func (rep Report) Write(w io.Writer, name string, signed bool) {
	chainLines := rep.Lines - rep.Legacy - len(rep.Torn)
	if p := rep.Problem; p != nil {
		fmt.Fprintf(w, "%s: FAILED at line %d: %s\n", name, p.Line, p.Why)
		if p.Line > 1 {
			fmt.Fprintf(w, "  lines before it: chain intact up to seq %d, %d signed checkpoint(s)\n", rep.LastSeq, rep.Signed)
		}
		return
	}
	if chainLines == 0 {
		if rep.KeyChecked {
			fmt.Fprintf(w, "%s: FAILED: %d line(s), none of them chained: nothing for the key to vouch for\n", name, rep.Lines)
			return
		}
		fmt.Fprintf(w, "%s: NOTHING VERIFIED: %d line(s), none of them chained (empty, or written by a clawd without the audit chain)\n", name, rep.Lines)
		return
	}
	if signed && rep.Signed == 0 {
		fmt.Fprintf(w, "%s: FAILED: no checkpoint signed by this key in %d line(s), seq %d..%d: whoever can write the file could have rewritten the whole chain (the daemon signs a checkpoint every audit-checkpoint-every lines, at rotation and when it stops)\n", name, rep.Lines, rep.FirstSeq, rep.LastSeq)
		return
	}
	fmt.Fprintf(w, "%s: OK: %d line(s), seq %d..%d, %d checkpoint(s)", name, rep.Lines, rep.FirstSeq, rep.LastSeq, rep.Checkpoints)
	if signed {
		fmt.Fprintf(w, ", %d signature(s) verified", rep.Signed)
	} else {
		fmt.Fprint(w, ", signatures NOT checked (no --key)")
	}
	fmt.Fprintln(w)
	switch {
	case signed && rep.UnsignedTail > 0:
		fmt.Fprintf(w, "warning: unsigned tail of %d line(s) after the last signed checkpoint (seq %d): vouched for by the chain only\n", rep.UnsignedTail, rep.SignedSeq)
	}
	if rep.HeadChecked > 0 {
		fmt.Fprintf(w, "head: the file holds the chain's head seq %d, unaltered: no line up to it was cut off\n", rep.HeadChecked)
	} else {
		fmt.Fprintln(w, "note: lines cut off the end leave no trace in the file: give --head SEQ:SHA256 (clawd status: audit chain head, or a copy noted off the host)")
	}
	if rep.LinkedBefore {
		fmt.Fprintf(w, "note: line 1 (seq %d) links to a line before this file (a rotated log): verify it after its predecessor, e.g. cat audit.log.1 audit.log | clawd audit verify -\n", rep.FirstSeq)
	}
	if rep.Legacy > 0 {
		fmt.Fprintf(w, "note: the first %d line(s) are not chained (an older clawd's); the chain links to the last of them\n", rep.Legacy)
	}
	for _, n := range rep.Unchecked {
		fmt.Fprintf(w, "note: line %d: clawd started without a head file, so it could not check the log's end then (changes made before it would show only as a broken chain)\n", n)
	}
	for _, n := range rep.Torn {
		fmt.Fprintf(w, "note: line %d is torn (a crash during its write), recorded by an audit_torn line after it\n", n)
	}
	if rep.Lost > 0 {
		fmt.Fprintf(w, "note: %d line(s) could not be written (disk full?), recorded by audit_lost lines\n", rep.Lost)
	}
}
