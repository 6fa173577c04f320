// Command formatperm creates the ext4 file system of a gokrazy image's /perm
// partition (partition 4) inside the image file.
//
// It exists because gok writes an unformatted /perm when writing an image to
// a file and leaves mkfs to the user, while Lifeline keeps its state, keys and
// config there from the first boot on: a freshly flashed router must not need
// a manual step (or an extra reboot) before the supervisor can start.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
)

func main() {
	if err := logic(); err != nil {
		fmt.Fprintln(os.Stderr, "formatperm:", err)
		os.Exit(1)
	}
}

func logic() error {
	flag.Parse()
	if flag.NArg() != 1 {
		return errors.New("usage: formatperm IMAGE")
	}
	img := flag.Arg(0)
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	start, size, err := partition(f, 4)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", img, err)
	}
	// -E offset writes the file system into the partition's byte range of
	// the image file; the size argument (in KiB) bounds it to the partition.
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-L", "perm",
		"-E", fmt.Sprintf("offset=%d", start), img, fmt.Sprintf("%dk", size/1024))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %w", cmd.Args, err)
	}
	fmt.Printf("formatperm: ext4 /perm at byte %d, %d MiB\n", start, size>>20)
	return nil
}

// partition returns the byte offset and length of partition n (1-based) from
// a GPT (behind its protective MBR) or an MBR partition table.
func partition(r io.ReaderAt, n int) (start, size int64, err error) {
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return 0, 0, fmt.Errorf("reading MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return 0, 0, errors.New("no MBR boot signature")
	}
	protective := false
	for i := 0; i < 4; i++ {
		protective = protective || mbr[446+16*i+4] == 0xee
	}
	// gokrazy writes a hybrid MBR (FAT boot partition for its BIOS loader
	// plus a 0xEE entry): the GPT behind it is the real table.
	if protective {
		hdr := make([]byte, 92)
		if _, err := r.ReadAt(hdr, 512); err != nil {
			return 0, 0, fmt.Errorf("reading GPT header: %w", err)
		}
		if string(hdr[:8]) != "EFI PART" {
			return 0, 0, errors.New("protective MBR entry but no GPT header")
		}
		entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
		count := int(binary.LittleEndian.Uint32(hdr[80:]))
		esize := int64(binary.LittleEndian.Uint32(hdr[84:]))
		if n > count || esize < 48 {
			return 0, 0, fmt.Errorf("GPT has %d entries of %d bytes, want entry %d", count, esize, n)
		}
		e := make([]byte, 48)
		if _, err := r.ReadAt(e, entriesLBA*512+int64(n-1)*esize); err != nil {
			return 0, 0, fmt.Errorf("reading GPT entry %d: %w", n, err)
		}
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		last := int64(binary.LittleEndian.Uint64(e[40:]))
		if first == 0 || last < first {
			return 0, 0, fmt.Errorf("GPT entry %d is empty", n)
		}
		return first * 512, (last - first + 1) * 512, nil
	}
	if n > 4 {
		return 0, 0, fmt.Errorf("MBR has 4 primary partitions, want %d", n)
	}
	e := mbr[446+16*(n-1):]
	first := int64(binary.LittleEndian.Uint32(e[8:]))
	count := int64(binary.LittleEndian.Uint32(e[12:]))
	if count == 0 {
		return 0, 0, fmt.Errorf("MBR partition %d is empty", n)
	}
	return first * 512, count * 512, nil
}
