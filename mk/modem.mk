# modem.mk: modem driver, simulator and their short fuzz runs.
# Included by the top-level Makefile (include mk/*.mk); `make test` calls fuzz-modem.

# An iteration count, not a duration: a duration can end while a worker is
# mid-input, which go test reports as "context deadline exceeded".
MODEM_FUZZTIME ?= 200000x
# package:FuzzTarget pairs; go test -fuzz takes one target of one package per run.
MODEM_FUZZ_TARGETS := \
	./modem/at:FuzzLineReader \
	./modem/at:FuzzFinalResult \
	./modem/signal:FuzzParseCSQ \
	./modem/signal:FuzzParseCESQ \
	./modem/signal:FuzzParseQENG \
	./modem/signal:FuzzParseQCSQ \
	./modem/signal:FuzzParseGSTATUS \
	./modem/signal:FuzzParseGTCCINFO \
	./modem/signal:FuzzParseCPSI
MODEM_FUZZ_CMDS := $(foreach t,$(MODEM_FUZZ_TARGETS),go test -run='^$$' -fuzz='^$(word 2,$(subst :, ,$(t)))$$' -fuzztime=$(MODEM_FUZZTIME) $(word 1,$(subst :, ,$(t)));)

.PHONY: fuzz-modem test-modem modemsim
fuzz-modem: ## short fuzz run of the AT line parser and every signal parser
	@set -e; $(MODEM_FUZZ_CMDS)

test-modem: ## modem unit, transcript and simulator tests (race detector on)
	go test -race ./modem/... ./cmd/lifeline-modemsim/...

modemsim: ## build bin/lifeline-modemsim
	go build -o bin/lifeline-modemsim ./cmd/lifeline-modemsim

EXTRA_TESTS += fuzz-modem
