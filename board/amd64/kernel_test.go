package amd64

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/lifeline-router/lifeline/board/kconfig"
)

// maxVmlinuzBytes keeps the kernel below the size gokrazy's MBR boot path can
// load (it must fit below 15 MB of extended memory) with headroom.
const maxVmlinuzBytes = 14 << 20

var embedded struct {
	once sync.Once
	opts map[string]string
	err  error
	size int
}

// readEmbedded extracts the committed kernel's config once per test binary
// (gunzipping the payload is slow under -race).
func readEmbedded(t *testing.T) map[string]string {
	t.Helper()
	embedded.once.Do(func() {
		img, err := os.ReadFile("vmlinuz")
		if err != nil {
			embedded.err = fmt.Errorf("committed kernel: %w (run make kernel)", err)
			return
		}
		embedded.size = len(img)
		cfg, err := kconfig.FromBzImage(img)
		if err != nil {
			embedded.err = fmt.Errorf("vmlinuz: %w", err)
			return
		}
		embedded.opts, embedded.err = kconfig.Parse(cfg)
	})
	if embedded.err != nil {
		t.Fatal(embedded.err)
	}
	return embedded.opts
}

func TestVmlinuzSize(t *testing.T) {
	readEmbedded(t)
	if embedded.size > maxVmlinuzBytes {
		t.Errorf("vmlinuz is %d bytes, want at most %d", embedded.size, maxVmlinuzBytes)
	}
}

// TestEmbeddedConfigHasFragment checks every option config.fragment requires
// (CONFIG_X=value lines) in the config embedded in the committed vmlinuz.
func TestEmbeddedConfigHasFragment(t *testing.T) {
	frag, err := os.ReadFile("config.fragment")
	if err != nil {
		t.Fatal(err)
	}
	want, err := kconfig.Parse(frag)
	if err != nil {
		t.Fatalf("config.fragment: %v", err)
	}
	got := readEmbedded(t)
	var keys []string
	for k, v := range want {
		if v != "n" { // trims are best effort: a selected option may stay
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) < 100 {
		t.Fatalf("config.fragment requires only %d options; parsing is broken", len(keys))
	}
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("vmlinuz has %s=%q, config.fragment requires %q", k, got[k], want[k])
		}
	}
}

// TestIssueOptions pins the options the issue names, independently of the
// fragment, so that deleting a line from the fragment cannot pass silently.
func TestIssueOptions(t *testing.T) {
	got := readEmbedded(t)
	for _, k := range strings.Fields(`MPTCP MPTCP_IPV6 WIREGUARD NET_SCH_CAKE NET_SCH_FQ_CODEL NET_SCH_HTB
		NET_SCH_NETEM IFB NET_SCH_INGRESS NET_CLS_U32 NET_CLS_MATCHALL NET_ACT_MIRRED
		IP_MULTIPLE_TABLES IP_ADVANCED_ROUTER NF_TABLES NFT_NAT NFT_MASQ TUN VETH SQUASHFS
		VIRTIO_NET VIRTIO_BLK SCSI_VIRTIO VIRTIO_CONSOLE E1000 E1000E IGB IGC R8169
		USB_SERIAL_OPTION USB_SERIAL_FTDI_SIO USB_NET_QMI_WWAN USB_NET_CDC_MBIM
		USB_NET_CDCETHER USB_NET_CDC_NCM USB_NET_RNDIS_HOST WWAN MAC80211_HWSIM
		IKCONFIG_PROC SERIAL_8250_CONSOLE DEVTMPFS`) {
		if v := got["CONFIG_"+k]; v != "y" {
			t.Errorf("CONFIG_%s=%q, want y", k, v)
		}
	}
	// WiFi hardware drivers are modules (firmware loads after root is mounted).
	for _, k := range []string{"IWLWIFI", "IWLMVM", "MT7921E", "MT7925E"} {
		if v := got["CONFIG_"+k]; v != "y" && v != "m" {
			t.Errorf("CONFIG_%s=%q, want y or m", k, v)
		}
	}
}

// TestModulesMatchKernel checks that lib/modules holds exactly one release,
// the one the committed kernel reports, with the metadata modprobe needs.
func TestModulesMatchKernel(t *testing.T) {
	got := readEmbedded(t)
	dirs, err := os.ReadDir(filepath.Join("lib", "modules"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 1 {
		t.Fatalf("lib/modules has %d entries, want one kernel release", len(dirs))
	}
	release := dirs[0].Name()
	if !strings.HasSuffix(release, strings.Trim(got["CONFIG_LOCALVERSION"], `"`)) {
		t.Errorf("lib/modules/%s does not end in CONFIG_LOCALVERSION %s", release, got["CONFIG_LOCALVERSION"])
	}
	for _, f := range []string{"modules.dep", "modules.alias", "modules.builtin", "modules.order"} {
		if _, err := os.Stat(filepath.Join("lib", "modules", release, f)); err != nil {
			t.Errorf("module metadata: %v", err)
		}
	}
	info, err := os.ReadFile("build-info.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info), "release: "+release+"\n") {
		t.Errorf("build-info.txt does not name release %s:\n%s", release, info)
	}
}
