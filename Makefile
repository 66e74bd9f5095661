# Conveniences; the README's commands work without make.
.PHONY: images test run deploy-build deploy-up deploy-down chaos

# The sandbox images, built from this host's files (busybox-static and
# python3-minimal from Debian): no registry is needed.
images:
	go run ./cmd/openagent images

test:
	go test -race -count=1 ./...

run:
	go run ./cmd/orchestrator

# The multi-host deployment (deploy/compose.yaml): static binaries built
# here, images on an empty base, nothing pulled. Rebuilding after a change
# rebuilds what changed: Go's build cache and the image layers' cache.
COMPOSE := docker-compose -p openagent -f deploy/compose.yaml
BUILD := deploy/.build

deploy-build: images
	mkdir -p $(BUILD)/bin $(BUILD)/rootfs/etc $(BUILD)/rootfs/tmp
	chmod 1777 $(BUILD)/rootfs/tmp
	printf 'root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >$(BUILD)/rootfs/etc/passwd
	printf 'root:x:0:\nnogroup:x:65534:\n' >$(BUILD)/rootfs/etc/group
	CGO_ENABLED=0 go build -trimpath -o $(BUILD)/bin/ ./cmd/orchestrator ./cmd/worker ./cmd/openagent github.com/nats-io/nats-server/v2
	$(COMPOSE) build

# Up, and ready: both orchestrators answering, one leading, both workers live.
deploy-up: deploy-build
	$(COMPOSE) up -d
	go run ./internal/chaos ready

# Down, with the sandboxes the deployment's workers made and its state.
deploy-down:
	-for scope in deploy/.state/worker-*/docker/scope; do \
		[ -f "$$scope" ] || continue; \
		docker ps -aq --filter label=io.openagent.driver-scope=$$(cat $$scope) | xargs -r docker rm -f >/dev/null; \
	done
	$(COMPOSE) down -v --remove-orphans
	rm -rf deploy/.state

# The fault suite against the deployment: it brings it up (if it is not),
# runs each case and ends with "N passed, N failed".
chaos: deploy-up
	go run ./internal/chaos run
