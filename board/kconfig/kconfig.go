// Package kconfig reads the kernel configuration embedded in a bzImage
// (CONFIG_IKCONFIG) and parses config files and fragments.
//
// It exists so that a test can prove the kernel we commit and ship was built
// with the options Lifeline depends on (CAKE, MPTCP, WireGuard...), without
// booting it: the committed board/amd64/config file could drift from the
// binary, the binary cannot. It follows the logic of the kernel's
// scripts/extract-ikconfig.
package kconfig

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Boot protocol header offsets (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202 // "HdrS"
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
)

var (
	ikcfgStart = []byte("IKCFG_ST")
	ikcfgEnd   = []byte("IKCFG_ED")
)

// FromBzImage returns the .config text embedded in an x86 bzImage. Only a
// gzip-compressed payload is supported (the board kernel is built with
// CONFIG_KERNEL_GZIP so that the standard library suffices).
func FromBzImage(img []byte) ([]byte, error) {
	if len(img) < offPayloadLength+4 {
		return nil, fmt.Errorf("bzImage: %d bytes is too short for a boot header", len(img))
	}
	if string(img[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, errors.New("bzImage: no HdrS boot header magic at 0x202")
	}
	setupSects := int(img[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	pm := (setupSects + 1) * 512
	off := int(binary.LittleEndian.Uint32(img[offPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(img[offPayloadLength:]))
	if pm+off+n > len(img) || n == 0 {
		return nil, fmt.Errorf("bzImage: payload [%d+%d, +%d) outside the %d-byte file", pm, off, n, len(img))
	}
	payload := img[pm+off : pm+off+n]
	if !bytes.HasPrefix(payload, []byte{0x1f, 0x8b}) {
		return nil, fmt.Errorf("bzImage: payload starts with % x, not gzip (build with CONFIG_KERNEL_GZIP)", payload[:min(4, len(payload))])
	}
	zr, err := gzip.NewReader(bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: gzip.NewReader: %w", err)
	}
	zr.Multistream(false)
	vmlinux, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: gunzip: %w", err)
	}
	return FromVmlinux(vmlinux)
}

// FromVmlinux returns the .config text embedded in an uncompressed kernel
// image: the gzip stream between the IKCFG_ST and IKCFG_ED markers.
func FromVmlinux(vmlinux []byte) ([]byte, error) {
	i := bytes.Index(vmlinux, ikcfgStart)
	if i < 0 {
		return nil, errors.New("vmlinux: no IKCFG_ST marker (kernel built without CONFIG_IKCONFIG)")
	}
	rest := vmlinux[i+len(ikcfgStart):]
	j := bytes.Index(rest, ikcfgEnd)
	if j < 0 {
		return nil, errors.New("vmlinux: IKCFG_ST without IKCFG_ED")
	}
	zr, err := gzip.NewReader(bytes.NewReader(rest[:j]))
	if err != nil {
		return nil, fmt.Errorf("ikconfig: gzip.NewReader: %w", err)
	}
	cfg, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("ikconfig: gunzip: %w", err)
	}
	return cfg, nil
}

// Parse returns the options a config file or fragment sets: CONFIG_X → value
// ("y", "m", a number or a quoted string), and "n" for "# CONFIG_X is not
// set" lines. Other lines are ignored; a malformed CONFIG_ line is an error
// naming it.
func Parse(text []byte) (map[string]string, error) {
	opts := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "CONFIG_"):
			k, v, ok := strings.Cut(l, "=")
			if !ok || v == "" || strings.ContainsAny(k, " \t") {
				return nil, fmt.Errorf("line %d: %q is not CONFIG_NAME=value", ln, l)
			}
			opts[k] = v
		case strings.HasPrefix(l, "# CONFIG_") && strings.HasSuffix(l, " is not set"):
			opts[strings.TrimSuffix(strings.TrimPrefix(l, "# "), " is not set")] = "n"
		}
	}
	return opts, sc.Err()
}
