package daemon

import "unsafe"

// unsafePort views a sockaddr port field (network byte order) as bytes.
func unsafePort(p *uint16) unsafe.Pointer { return unsafe.Pointer(p) }
