package main

import "unsafe"

func unsafePtr(b *[16]byte) unsafe.Pointer { return unsafe.Pointer(b) }
