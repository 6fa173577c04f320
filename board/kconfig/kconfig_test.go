package kconfig

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"strings"
	"testing"
)

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeBzImage builds the minimal structure FromBzImage walks: a boot header
// pointing at a gzip payload that holds a "vmlinux" with an IKCFG block.
func fakeBzImage(t *testing.T, config string) []byte {
	vmlinux := append([]byte("\x7fELF...code..."), "IKCFG_ST"...)
	vmlinux = append(vmlinux, gz(t, []byte(config))...)
	vmlinux = append(vmlinux, "IKCFG_ED...more code"...)
	payload := gz(t, vmlinux)
	img := make([]byte, 5*512+100)
	img[offSetupSects] = 4
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], 100)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	img = append(img, payload...)
	return append(img, "trailer"...)
}

func TestFromBzImage(t *testing.T) {
	const cfg = "CONFIG_NET_SCH_CAKE=y\n# CONFIG_SOUND is not set\n"
	got, err := FromBzImage(fakeBzImage(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != cfg {
		t.Errorf("FromBzImage = %q, want %q", got, cfg)
	}
}

func TestFromBzImageErrors(t *testing.T) {
	img := fakeBzImage(t, "x")
	for name, tc := range map[string]struct {
		img  []byte
		want string
	}{
		"short":     {img[:10], "too short"},
		"magic":     {append(append([]byte{}, img[:offHeaderMagic]...), append([]byte("XXXX"), img[offHeaderMagic+4:]...)...), "HdrS"},
		"truncated": {img[:len(img)-40], "outside"},
	} {
		_, err := FromBzImage(tc.img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
	if _, err := FromVmlinux([]byte("no config here")); err == nil || !strings.Contains(err.Error(), "IKCONFIG") {
		t.Errorf("FromVmlinux without marker: err = %v", err)
	}
}

func TestParse(t *testing.T) {
	opts, err := Parse([]byte("# comment\nCONFIG_A=y\nCONFIG_B=\"x y\"\n# CONFIG_C is not set\n\nCONFIG_D=m\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CONFIG_A": "y", "CONFIG_B": `"x y"`, "CONFIG_C": "n", "CONFIG_D": "m"}
	if len(opts) != len(want) {
		t.Errorf("Parse = %v, want %v", opts, want)
	}
	for k, v := range want {
		if opts[k] != v {
			t.Errorf("%s = %q, want %q", k, opts[k], v)
		}
	}
	if _, err := Parse([]byte("CONFIG_A=y\nCONFIG_BROKEN\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Parse(malformed) err = %v, want line 2", err)
	}
}
