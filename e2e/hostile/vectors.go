package main

import (
	"strings"
)

// Vector names encode what the test expects (see e2e/gate_test.go):
// "-ctl-" vectors are controls that must work; every other vector is an
// attack whose request must never reach the upstream undecided.

func plain4() string { return hostAddr(*ip4, *httpPort) }
func plain6() string { return hostAddr(*ip6, *httpPort) }
func tls4() string   { return hostAddr(*ip4, *tlsPort) }
func tls6() string   { return hostAddr(*ip6, *tlsPort) }

const (
	hdrs = "Host: {H}\r\nUser-Agent: hostile\r\n"
	del  = "DELETE {P} HTTP/1.1\r\n" + hdrs + "\r\n"
	adm  = "GET /admin{P} HTTP/1.1\r\n" + hdrs + "\r\n"
	get  = "GET {P} HTTP/1.1\r\n" + hdrs + "\r\n"
	delT = "DELETE {P} HTTP/1.1\r\nHost: {HT}\r\nConnection: close\r\n\r\n"
	getT = "GET {P} HTTP/1.1\r\nHost: {HT}\r\nConnection: close\r\n\r\n"
	admT = "GET /admin{P} HTTP/1.1\r\nHost: {HT}\r\nConnection: close\r\n\r\n"
)

// Class 1: downgrade to an uninspected splice. The destination is the
// intercepted host (by IP: the kernel only ever sees the IP); every vector
// tries to make the proxy give up on parsing it.
func downgradeVectors() []vector {
	L := *late
	vs := []vector{
		{"c1-ctl-get", rawVector(plain4(), now(get))},
		{"c1-ctl-delete", rawVector(plain4(), now(del))},
		{"c1-ctl-admin", rawVector(plain4(), now(adm))},
		// First byte after the peek timeout.
		{"c1-late-delete", rawVector(plain4(), after(L, del))},
		{"c1-late-admin", rawVector(plain4(), after(L, adm))},
		{"c1-late-v6", rawVector(plain6(), after(L, del))},
		{"c1-late-host-ip", rawVector(plain4(), after(L, "DELETE {P} HTTP/1.1\r\nHost: {IP}\r\n\r\n"))},
		{"c1-late-upload", rawVector(plain4(), after(L, "POST /upload{P} HTTP/1.1\r\n"+hdrs+"Content-Length: 5\r\n\r\nhello"))},
		{"c1-late-get", rawVector(plain4(), after(L, get))}, // allowed-shaped: must still be decided
		// First bytes in time, then a pause longer than the peek timeout.
		{"c1-pause-first-byte", rawVector(plain4(), now("D"), after(L, expandLater(del[1:])))},
		{"c1-pause-after-method", rawVector(plain4(), now("DELETE"), after(L, expandLater(del[len("DELETE"):])))},
		// Request lines real servers accept that a sniffer may not.
		{"c1-lower-method", rawVector(plain4(), now("delete {P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c1-mixed-case-method", rawVector(plain4(), now("Delete {P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c1-leading-crlf", rawVector(plain4(), now("\r\n"+del))},
		{"c1-leading-lflf", rawVector(plain4(), now("\n\n"+del))},
		{"c1-leading-space", rawVector(plain4(), now(" "+del))},
		{"c1-long-method", rawVector(plain4(), now("PROPFINDXXXXXXXXXXXXXXXXXXXXXXXX /admin{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c1-method-digit", rawVector(plain4(), now("GET2 /admin{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c1-method-dot", rawVector(plain4(), now("X.GET /admin{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c1-http10-no-host", rawVector(plain4(), now("DELETE {P} HTTP/1.0\r\n\r\n"))},
		{"c1-pri-h2", rawF(plain4(), func(n string) []step { return []step{now(h2Preface("DELETE", expand(n, "{P}"), expand(n, "{H}")))} })},
		{"c1-garbage", rawVector(plain4(), now("\x00\x01\x02{M}\r\n\r\n"))},
		// TLS: the ClientHello in shapes a one-record sniffer cannot read.
		{"c1-tls-ctl-get", tlsVector(tlsOpts{addr: tls4(), sni: *strict, reqs: []string{getT}})},
		{"c1-tls-ctl-delete", tlsVector(tlsOpts{addr: tls4(), sni: *strict, reqs: []string{delT}})},
		{"c1-tls-no-sni", tlsVector(tlsOpts{addr: tls4(), reqs: []string{delT}})},
		{"c1-tls-no-sni-v6", tlsVector(tlsOpts{addr: tls6(), reqs: []string{delT}})},
		{"c1-tls-no-sni-admin", tlsVector(tlsOpts{addr: tls4(), reqs: []string{admT}})},
		{"c1-tls-split-records", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitRecords(100, 0), reqs: []string{delT}})},
		{"c1-tls-tiny-records", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitRecords(16, 0), reqs: []string{delT}})},
		{"c1-tls-split-tcp", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitWrites(40, L), reqs: []string{delT}})},
		{"c1-tls-first-byte-pause", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitWrites(1, L), reqs: []string{delT}})},
		{"c1-tls-late", tlsVector(tlsOpts{addr: tls4(), sni: *strict, lateBy: L, reqs: []string{delT}})},
		{"c1-tls-record-ssl3", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitRecords(1<<14, 0x0300), reqs: []string{delT}})},
		{"c1-tls-record-odd-version", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: splitRecords(1<<14, 0x0399), reqs: []string{delT}})},
		{"c1-tls-empty-first-record", tlsVector(tlsOpts{addr: tls4(), sni: *strict, rewrite: emptyFirst, reqs: []string{delT}})},
		{"c1-sslv2-hello", sslv2Vector(tls4())},
		// Controls: a purely connection-level destination keeps the
		// server-speaks-first path and late clients.
		{"c1-ctl-conn-banner", bannerVector(hostAddr(*ip4, *connPort), 0)},
		{"c1-ctl-conn-late-echo", bannerVector(hostAddr(*ip4, *connPort), L)},
	}
	return vs
}

// expandLater marks a template part for expansion by rawVector (all parts
// are expanded there; this only documents that a slice of a template is
// still a template).
func expandLater(s string) string { return s }

// rawF is rawVector for streams whose bytes depend on the expanded
// templates (lengths, binary frames): build returns the final steps.
func rawF(addr string, build func(name string) []step) func(string) (string, string) {
	return func(name string) (string, string) {
		return rawVector(addr, build(name)...)(name)
	}
}

// Class 2: parser differentials. Byte streams that a common server (Go,
// llhttp, nginx) reads as some request: clawd must refuse them or decide
// exactly the request the upstream then sees. Smuggled requests carry
// "/admin{P}x" or DELETE, so a smuggled request that reaches the upstream
// is a denied one.
func parserVectors() []vector {
	p := plain4()
	smug := "DELETE /admin{P}/x HTTP/1.1\r\n" + hdrs + "\r\n"
	return []vector{
		{"c2-ctl-get", rawVector(p, now(get))},
		{"c2-ctl-post", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: 5\r\n\r\nhello"))},
		{"c2-obs-fold-host", rawVector(p, now("GET {P} HTTP/1.1\r\nHost: {LOOSE}\r\n {H}\r\n\r\n"))},
		{"c2-obs-fold-te", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-bare-lf", rawVector(p, now("DELETE {P} HTTP/1.1\nHost: {H}\n\n"))},
		{"c2-bare-lf-header", rawVector(p, now("GET {P} HTTP/1.1\r\n"+hdrs+"X-A: b\n"+smug))},
		{"c2-bare-cr-header", rawVector(p, now("GET {P} HTTP/1.1\r\n"+hdrs+"X-A: b\r"+smug))},
		{"c2-bare-cr-request-line", rawVector(p, now("DELETE {P} HTTP/1.1\rHost: {H}\r\n\r\n"))},
		{"c2-tab-request-line", rawVector(p, now("DELETE\t{P}\tHTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-tab-after-method", rawVector(p, now("GET\t/admin{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-tab-in-host", rawVector(p, now("GET {P} HTTP/1.1\r\nHost:\t{H}\t\r\n\r\n"))},
		{"c2-cl-conflict", rawF(p, func(n string) []step {
			return []step{now(expand(n, "POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: 0\r\nContent-Length: ") + itoa(len(expand(n, smug))) + "\r\n\r\n" + expand(n, smug))}
		})},
		{"c2-cl-comma", rawF(p, func(n string) []step {
			return []step{now(expand(n, "POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: 0, ") + itoa(len(expand(n, smug))) + "\r\n\r\n" + expand(n, smug))}
		})},
		{"c2-cl-plus", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: +0\r\n\r\n"+smug))},
		{"c2-cl-te", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-te-cl", rawF(p, func(n string) []step {
			sm := expand(n, smug)
			return []step{now(expand(n, "POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n") + hexLen(len(sm)) + "\r\n" + sm + "\r\n0\r\n\r\n")}
		})},
		{"c2-te-twice", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-te-list", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-te-space-before-colon", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-te-upper", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-te-xchunked", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"+smug))},
		{"c2-chunk-bare-lf", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"+smug))},
		{"c2-chunk-ext-quote", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: chunked\r\n\r\n5;a=\"\r\n0\r\n\r\n"+smug+"\"\r\nhello\r\n0\r\n\r\n"))},
		{"c2-chunk-size-overflow", rawVector(p, now("POST {P} HTTP/1.1\r\n"+hdrs+"Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"+smug))},
		{"c2-absolute-other-host", rawVector(p, now("DELETE http://{LOOSE}:8190{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-absolute-admin", rawVector(p, now("GET http://{H}/admin{P} HTTP/1.1\r\nHost: {LOOSE}:8190\r\n\r\n"))},
		{"c2-absolute-vs-host", rawVector(p, now("GET http://{H}{P} HTTP/1.1\r\nHost: {LOOSE}:8190\r\n\r\n"))},
		{"c2-absolute-userinfo", rawVector(p, now("DELETE http://{LOOSE}@{H}{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-absolute-https-scheme", rawVector(p, now("DELETE https://{H}{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-http09", rawVector(p, now("GET /admin{P}\r\n"))},
		{"c2-http09-delete", rawVector(p, now("DELETE {P}\r\n\r\n"))},
		{"c2-http09-lower", rawVector(p, now("get /admin{P}\r\n"))},
		{"c2-version-1-2", rawVector(p, now("DELETE {P} HTTP/1.2\r\n"+hdrs+"\r\n"))},
		{"c2-version-lower", rawVector(p, now("DELETE {P} http/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-h2c-upgrade-then-preface", rawF(p, func(n string) []step {
			return []step{now(expand(n, "GET {P} HTTP/1.1\r\n"+hdrs+"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")),
				now(h2Preface("DELETE", expand(n, "/admin{P}"), expand(n, "{H}")))}
		})},
		{"c2-fragment-in-path", rawVector(p, now("GET /admin#{P} HTTP/1.1\r\n"+hdrs+"\r\n"))},
		{"c2-nul-in-header", rawVector(p, now("GET {P} HTTP/1.1\r\n"+hdrs+"X-A: a\x00b\r\n\r\n"))},
		{"c2-host-space-colon", rawVector(p, now("DELETE {P} HTTP/1.1\r\nHost : {LOOSE}\r\n"+hdrs+"\r\n"))},
		{"c2-pipelined-admin", rawVector(p, now(get+adm))},
		{"c2-get-with-body-smuggle", rawF(p, func(n string) []step {
			sm := expand(n, smug)
			return []step{now(expand(n, "GET {P} HTTP/1.1\r\n"+hdrs+"Content-Length: ") + itoa(len(sm)) + "\r\n\r\n" + sm)}
		})},
	}
}

func itoa(n int) string {
	const d = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{d[n%10]}, b...)
		n /= 10
	}
	return string(b)
}

func hexLen(n int) string {
	const d = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{d[n%16]}, b...)
		n /= 16
	}
	return string(b)
}

// Class 3: co-hosted names. loose.upstream.test (TLS passthrough allowed)
// and strict.upstream.test (intercepted, DELETE denied) resolve to the same
// IP; blocked.upstream.test (every connection denied) too.
func cohostVectors() []vector {
	t := tls4()
	delS := "DELETE {P} HTTP/1.1\r\nHost: {HT}\r\nConnection: close\r\n\r\n"
	return []vector{
		{"c3-ctl-strict-intercepted", tlsVector(tlsOpts{addr: t, sni: *strict, reqs: []string{delS}})},
		{"c3-ctl-loose-passthrough", tlsVector(tlsOpts{addr: t, sni: *loose, reqs: []string{"GET {P} HTTP/1.1\r\nHost: {LOOSE}:8593\r\nConnection: close\r\n\r\n"}})},
		{"c3-ctl-loose-echo", echoVector(hostAddr(*ip4, *coPort))},
		{"c3-sni-loose-host-strict", tlsVector(tlsOpts{addr: t, sni: *loose, reqs: []string{delS}})},
		{"c3-sni-loose-host-strict-admin", tlsVector(tlsOpts{addr: t, sni: *loose, reqs: []string{"GET /admin{P} HTTP/1.1\r\nHost: {HT}\r\nConnection: close\r\n\r\n"}})},
		{"c3-sni-loose-pipelined", tlsVector(tlsOpts{addr: t, sni: *loose, reqs: []string{"GET {P}/a HTTP/1.1\r\nHost: {LOOSE}:8593\r\n\r\n" + delS}})},
		{"c3-sni-loose-upper", tlsVector(tlsOpts{addr: t, sni: strings.ToUpper(*loose), reqs: []string{delS}})},
		{"c3-sni-loose-v6", tlsVector(tlsOpts{addr: tls6(), sni: *loose, reqs: []string{delS}})},
		{"c3-no-sni-shared-ip", tlsVector(tlsOpts{addr: t, reqs: []string{delS}})},
		{"c3-late-plain-shared-ip", rawVector(plain4(), after(*late, del))},
		{"c3-garbage-shared-ip", rawVector(t, now("\x00\x01{M}\r\n\r\n"))},
		{"c3-echo-most-restrictive", echoVector(hostAddr(*ip4, *coPort))},
	}
}

// Class 8: encoded request bodies against body_contains "hostile-forbidden"
// on POST /submit/** and secret placeholders bound to another host.
func encodedVectors() []vector {
	p := plain4()
	forbidden := []byte(`{"q":"hostile-forbidden: drop everything"}`)
	clean := []byte(`{"q":"a perfectly harmless request body"}`)
	post := func(path string, enc []string, body []byte, chunked bool) func(string) (string, string) {
		return func(name string) (string, string) {
			return rawVector(p, now(postReq(expand(name, path), enc, body, chunked)))(name)
		}
	}
	exfil := func(enc string, body func() []byte) func(string) (string, string) {
		return func(name string) (string, string) {
			b := []byte(`{"token":"` + *ph + `"}`)
			if body != nil {
				b = body()
			}
			var encs []string
			if enc != "" {
				encs = []string{enc}
			}
			return post("/data{P}", encs, encodeAs(enc, b), false)(name)
		}
	}
	vs := []vector{
		{"c8-ctl-identity", post("/submit{P}", nil, forbidden, false)},
		{"c8-ctl-gzip-clean", post("/submit{P}", []string{"gzip"}, gz(clean), false)},
		{"c8-ctl-br-clean", post("/submit{P}", []string{"br"}, brotliStored(clean), false)},
		{"c8-ctl-zstd-clean", post("/submit{P}", []string{"zstd"}, zstdEnc(clean), false)},
		{"c8-ctl-deflate-clean", post("/submit{P}", []string{"deflate"}, zlibEnc(clean), false)},
		{"c8-gzip", post("/submit{P}", []string{"gzip"}, gz(forbidden), false)},
		{"c8-x-gzip", post("/submit{P}", []string{"x-gzip"}, gz(forbidden), false)},
		{"c8-gzip-upper", post("/submit{P}", []string{"GZIP"}, gz(forbidden), false)},
		{"c8-gzip-chunked", post("/submit{P}", []string{"gzip"}, gz(forbidden), true)},
		{"c8-deflate", post("/submit{P}", []string{"deflate"}, zlibEnc(forbidden), false)},
		{"c8-deflate-raw", post("/submit{P}", []string{"deflate"}, flateEnc(forbidden), false)},
		{"c8-br", post("/submit{P}", []string{"br"}, brotliStored(forbidden), false)},
		{"c8-zstd", post("/submit{P}", []string{"zstd"}, zstdEnc(forbidden), false)},
		{"c8-gzip-gzip", post("/submit{P}", []string{"gzip, gzip"}, gz(gz(forbidden)), false)},
		{"c8-gzip-br-two-headers", post("/submit{P}", []string{"gzip", "br"}, brotliStored(gz(forbidden)), false)},
		{"c8-identity-then-gzip", post("/submit{P}", []string{"identity", "gzip"}, gz(forbidden), false)},
		{"c8-gzip-multimember", post("/submit{P}", []string{"gzip"}, append(gz(clean), gz(forbidden)...), false)},
		{"c8-unknown-encoding", post("/submit{P}", []string{"x-hostile"}, forbiddenXor(forbidden), false)},
		{"c8-unknown-encoding-clean", post("/submit{P}", []string{"x-hostile"}, clean, false)},
		{"c8-gzip-corrupt", post("/submit{P}", []string{"gzip"}, []byte("\x1f\x8b\x08\x00garbage-not-gzip"), false)},
		{"c8-gzip-bomb", post("/submit{P}", []string{"gzip"}, gzBomb(256<<20), false)},
		{"c8-ctl-exfil-plain", exfil("", nil)},
		{"c8-exfil-gzip", exfil("gzip", nil)},
		{"c8-exfil-br", exfil("br", nil)},
		{"c8-exfil-zstd", exfil("zstd", nil)},
		{"c8-exfil-deflate", exfil("deflate", nil)},
		{"c8bg-preview", post("/upload{P}", []string{"gzip"}, gz([]byte("preview-visible-text of the hostile upload")), false)},
	}
	return vs
}
