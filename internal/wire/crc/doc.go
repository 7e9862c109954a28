// Package crc is the CRC-32C (Castagnoli, hardware-accelerated on amd64
// and arm64) that netstation's wire formats seal their headers and
// payloads with, and the one way to checksum a header whose checksum
// field lies inside the bytes it covers.
package crc
