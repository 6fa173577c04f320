# uplinks.mk: the fiber/Ethernet (DHCP, VLAN) and WiFi 6E uplinks.
# Included by the top-level Makefile (include mk/*.mk). `make test` already
# runs these packages through `go test ./...`; the targets here run them
# alone. The hwsim/hostapd WiFi tests boot the board kernel in QEMU
# (vmtest) when the host has no mac80211_hwsim: TestHwsimSAE (the WiFi
# manager on its own, unit stage) and TestWiFiSupervisorVM (bin/lifeline as
# supervisor and concentrator, WiFi failing over to a backup uplink and
# back; VM stage, make vmtest).

UPLINK_PKGS := ./uplinks/dhcp4/... ./uplinks/ethernet/... ./uplinks/wifi/...

.PHONY: test-uplinks vmtest-wifi
test-uplinks: ## DHCP (dnsmasq + server4), carrier, VLAN, wpa_supplicant tests (root, -race)
	$(GO) test -race -count=1 $(UPLINK_PKGS)

vmtest-wifi: ## WPA3-SAE over mac80211_hwsim with hostapd in the VM: the manager alone, then the supervisor failing over to a backup
	$(GO) test -count=1 -v -timeout 20m -run '^(TestHwsimSAE|TestWiFiSupervisorVM)$$' ./uplinks/wifi/
