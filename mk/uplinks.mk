# uplinks.mk: the fiber/Ethernet (DHCP, VLAN) and WiFi 6E uplinks.
# Included by the top-level Makefile (include mk/*.mk). `make test` already
# runs these packages through `go test ./...`; the targets here run them
# alone. The hwsim/hostapd WiFi test boots the board kernel in QEMU
# (vmtest) when the host has no mac80211_hwsim.

UPLINK_PKGS := ./uplinks/dhcp4/... ./uplinks/ethernet/... ./uplinks/wifi/...

.PHONY: test-uplinks vmtest-wifi
test-uplinks: ## DHCP (dnsmasq + server4), carrier, VLAN, wpa_supplicant tests (root, -race)
	$(GO) test -race -count=1 $(UPLINK_PKGS)

vmtest-wifi: ## WPA3-SAE association over mac80211_hwsim with hostapd, in the VM
	$(GO) test -count=1 -v -run '^TestHwsimSAE$$' ./uplinks/wifi/
