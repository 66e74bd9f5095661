# Conveniences; the README's commands work without make.
.PHONY: images test run

# The sandbox images, built from this host's files (busybox-static and
# python3-minimal from Debian): no registry is needed.
images:
	go run ./cmd/openagent images

test:
	go test -race -count=1 ./...

run:
	go run ./cmd/orchestrator
