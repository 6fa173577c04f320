package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestPartitionMBR(t *testing.T) {
	img := make([]byte, 1024)
	img[510], img[511] = 0x55, 0xaa
	e := img[446+16*3:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], 4096)
	start, size, err := partition(bytes.NewReader(img), 4)
	if err != nil || start != 2048*512 || size != 4096*512 {
		t.Errorf("partition = %d, %d, %v; want %d, %d", start, size, err, 2048*512, 4096*512)
	}
	if _, _, err := partition(bytes.NewReader(img), 2); err == nil {
		t.Errorf("empty partition 2: no error")
	}
}

func TestPartitionGPT(t *testing.T) {
	img := make([]byte, 512*40)
	img[510], img[511] = 0x55, 0xaa
	img[446+4] = 0x0c // hybrid, as gokrazy writes it: FAT first, 0xEE second
	img[446+16+4] = 0xee
	copy(img[512:], "EFI PART")
	binary.LittleEndian.PutUint64(img[512+72:], 2)
	binary.LittleEndian.PutUint32(img[512+80:], 128)
	binary.LittleEndian.PutUint32(img[512+84:], 128)
	e := img[2*512+3*128:]
	binary.LittleEndian.PutUint64(e[32:], 100)
	binary.LittleEndian.PutUint64(e[40:], 199)
	start, size, err := partition(bytes.NewReader(img), 4)
	if err != nil || start != 100*512 || size != 100*512 {
		t.Errorf("partition = %d, %d, %v; want %d, %d", start, size, err, 100*512, 100*512)
	}
	copy(img[512:], "NOT GPT!")
	if _, _, err := partition(bytes.NewReader(img), 4); err == nil {
		t.Errorf("broken GPT header: no error")
	}
}
