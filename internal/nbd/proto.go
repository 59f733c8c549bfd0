package nbd

import "encoding/binary"

// The NBD transmission phase as the kernel speaks it (include/uapi/linux/nbd.h,
// the "simple reply" form): every field is big-endian.
const (
	requestMagic = 0x25609513
	replyMagic   = 0x67446698

	requestSize = 28 // magic u32, flags u16, type u16, handle u64, offset u64, length u32
	replySize   = 16 // magic u32, error u32, handle u64

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	// Error values on the wire are Linux errno numbers (the kernel turns
	// any non-zero one into an I/O error for the request).
	errPerm  = 1
	errIO    = 5
	errInval = 22

	// maxRequest bounds one request's buffer. The kernel never sends more
	// than its max_hw_sectors for nbd (65536 sectors, 32 MiB); anything
	// larger is refused rather than allocated.
	maxRequest = 32 << 20
	// maxPooledBuf is the largest read buffer the server keeps for the
	// next request, and the max_sectors_kb Connect asks of the queue.
	maxPooledBuf = 1 << 20
)

type request struct {
	magic  uint32
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

func parseRequest(b []byte) request {
	return request{
		magic:  binary.BigEndian.Uint32(b[0:]),
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}
}

func (r request) marshal(b []byte) {
	binary.BigEndian.PutUint32(b[0:], r.magic)
	binary.BigEndian.PutUint16(b[4:], r.flags)
	binary.BigEndian.PutUint16(b[6:], r.typ)
	binary.BigEndian.PutUint64(b[8:], r.handle)
	binary.BigEndian.PutUint64(b[16:], r.offset)
	binary.BigEndian.PutUint32(b[24:], r.length)
}

func putReply(b []byte, errno uint32, handle uint64) {
	binary.BigEndian.PutUint32(b[0:], replyMagic)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], handle)
}
