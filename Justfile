# The operator harness and the single entry point for build, test and bench.
# `just up` brings up anvil, the Alpaca simulator and the issuer on 127.0.0.1; `just down` stops them.

set shell := ["bash", "-euo", "pipefail", "-c"]

run := ".run"
anvil := "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
issuer := "target/debug/issuer"
rpc := "http://127.0.0.1:8545"
rpc2 := "http://127.0.0.1:8546"
issuer_url := "http://127.0.0.1:8000"
sim_url := "http://127.0.0.1:9000"

# List the recipes.
default:
    @just --list

# Install the npm packages (solc-js, OpenZeppelin, anvil) and check the toolchain.
setup:
    @command -v cargo >/dev/null || { echo "cargo missing: install Rust (rustup)"; exit 1; }
    @command -v node >/dev/null || { echo "node missing: install Node.js 18+"; exit 1; }
    @command -v npm >/dev/null || { echo "npm missing"; exit 1; }
    npm ci --prefix contracts --no-audit --no-fund --loglevel=error
    @test -x {{anvil}} || { echo "anvil binary missing after npm ci"; exit 1; }
    @{{anvil}} --version | head -1
    @python3 -c 'import moto.server' 2>/dev/null || echo "note: the KMS signer tests need moto's server: python3 -m pip install 'moto[server]' (or ISSUER_SKIP_KMS_TESTS=1)"

# Compile the Solidity sources with solc-js into contracts/out/*.json (committed).
contracts:
    node contracts/build.js

# Build the issuer binary.
build:
    cargo build

# Install the npm packages (anvil, solc-js) if they are missing: what `up` and `test` need.
_npm:
    @test -x {{anvil}} || just setup

# Start a local anvil on 127.0.0.1:8545 (1-second blocks) unless one from `just chain` runs.
chain: _npm
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{run}}
    if [ -f {{run}}/anvil.pid ] && kill -0 "$(cat {{run}}/anvil.pid)" 2>/dev/null; then
      echo "anvil already running (pid $(cat {{run}}/anvil.pid)) on {{rpc}}"; exit 0
    fi
    test -x {{anvil}} || { echo "anvil is not installed: run 'just setup' first"; exit 1; }
    # A fresh chain makes the old cache meaningless: start the local store anew too.
    rm -f {{run}}/issuer.redb
    # Past its in-memory history anvil writes old states to disk, and never deletes them once
    # stopped: keep them in the run directory, which `just down` clears of them.
    rm -rf {{run}}/anvil-states && mkdir -p {{run}}/anvil-states
    {{anvil}} --host 127.0.0.1 --port 8545 --block-time 1 --cache-path {{run}}/anvil-states > {{run}}/anvil.log 2>&1 &
    echo $! > {{run}}/anvil.pid
    for _ in $(seq 1 100); do
      curl -sf -X POST -H 'content-type: application/json' \
        --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' {{rpc}} >/dev/null && break
      sleep 0.1
    done
    echo "anvil pid $(cat {{run}}/anvil.pid) on {{rpc}}"

# Deploy the AAPL vault (safe to re-run: an existing asset is checked, not redeployed).
deploy asset="AAPL" token="tAAPL": build
    mkdir -p {{run}}
    {{issuer}} deploy --asset {{asset}} --token {{token}} --db {{run}}/issuer.redb --rpc-url {{rpc}}

# Bring up the whole local stack in the background (anvil, simulator, issuer) with PIDs recorded.
up: build chain
    #!/usr/bin/env bash
    set -euo pipefail
    alive() { [ -f "{{run}}/$1.pid" ] && kill -0 "$(cat "{{run}}/$1.pid")" 2>/dev/null; }
    if ! alive sim; then
      {{issuer}} alpaca-sim serve --listen 127.0.0.1:9000 > {{run}}/sim.log 2>&1 &
      echo $! > {{run}}/sim.pid
    fi
    if ! alive issuer; then
      {{issuer}} deploy --asset AAPL --token tAAPL --db {{run}}/issuer.redb --rpc-url {{rpc}} > {{run}}/deploy.json
      {{issuer}} serve --db {{run}}/issuer.redb --rpc-url {{rpc}} --listen 127.0.0.1:8000 > {{run}}/issuer.log 2>&1 &
      echo $! > {{run}}/issuer.pid
    fi
    for _ in $(seq 1 100); do curl -sf {{issuer_url}}/health >/dev/null && break; sleep 0.1; done
    curl -sf {{issuer_url}}/health >/dev/null || { echo "issuer did not come up; see {{run}}/issuer.log"; tail -20 {{run}}/issuer.log; exit 1; }
    echo "anvil      {{rpc}}            pid $(cat {{run}}/anvil.pid)   log {{run}}/anvil.log"
    echo "simulator  {{sim_url}}            pid $(cat {{run}}/sim.pid)   log {{run}}/sim.log"
    echo "issuer     {{issuer_url}}            pid $(cat {{run}}/issuer.pid)   log {{run}}/issuer.log"
    echo "vault      $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vault"])' {{run}}/deploy.json)  (AAPL -> tAAPL on anvil)"
    echo "store      {{run}}/issuer.redb"

# The stack with two networks in one issuer: `anvil` (chain id 31337, {{rpc}}) and `anvil2`
# (chain id 31338, {{rpc2}}), tAAPL deployed on both; `just demo anvil2` mints and redeems on the
# second. Stop it with `just down`.
up-multi: build chain
    #!/usr/bin/env bash
    set -euo pipefail
    alive() { [ -f "{{run}}/$1.pid" ] && kill -0 "$(cat "{{run}}/$1.pid")" 2>/dev/null; }
    if alive issuer; then echo "an issuer is already running (pid $(cat {{run}}/issuer.pid)): just down first"; exit 1; fi
    if ! alive anvil2; then
      rm -rf {{run}}/anvil2-states && mkdir -p {{run}}/anvil2-states
      {{anvil}} --host 127.0.0.1 --port 8546 --chain-id 31338 --block-time 1 --cache-path {{run}}/anvil2-states > {{run}}/anvil2.log 2>&1 &
      echo $! > {{run}}/anvil2.pid
      for _ in $(seq 1 100); do
        curl -sf -X POST -H 'content-type: application/json' \
          --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' {{rpc2}} >/dev/null && break
        sleep 0.1
      done
    fi
    if ! alive sim; then
      {{issuer}} alpaca-sim serve --listen 127.0.0.1:9000 > {{run}}/sim.log 2>&1 &
      echo $! > {{run}}/sim.pid
    fi
    export ISSUER_LOCAL_NETWORKS=anvil,anvil2
    {{issuer}} deploy --asset AAPL --token tAAPL --network anvil --db {{run}}/issuer.redb --rpc-url {{rpc}} > {{run}}/deploy.json
    {{issuer}} deploy --asset AAPL --token tAAPL --network anvil2 --db {{run}}/issuer.redb --rpc-url {{rpc2}} > {{run}}/deploy-anvil2.json
    # `just report` reads the same list.
    echo "name=anvil,rpc={{rpc}},chain-id=31337;name=anvil2,rpc={{rpc2}},chain-id=31338" > {{run}}/networks
    {{issuer}} serve --db {{run}}/issuer.redb --listen 127.0.0.1:8000 --networks "$(cat {{run}}/networks)" \
      > {{run}}/issuer.log 2>&1 &
    echo $! > {{run}}/issuer.pid
    for _ in $(seq 1 100); do curl -sf {{issuer_url}}/health >/dev/null && break; sleep 0.1; done
    curl -sf {{issuer_url}}/health >/dev/null || { echo "issuer did not come up; see {{run}}/issuer.log"; tail -20 {{run}}/issuer.log; exit 1; }
    echo "anvil      {{rpc}}  chain id 31337  pid $(cat {{run}}/anvil.pid)"
    echo "anvil2     {{rpc2}}  chain id 31338  pid $(cat {{run}}/anvil2.pid)"
    echo "simulator  {{sim_url}}            pid $(cat {{run}}/sim.pid)"
    echo "issuer     {{issuer_url}}            pid $(cat {{run}}/issuer.pid)   log {{run}}/issuer.log"
    curl -sf -H 'X-API-KEY: local-dev-alpaca-key-0123456789abcdef' {{issuer_url}}/tokenization/tokens; echo

# Stop exactly what `just up` (or `just up-multi`) started, by PID.
down:
    #!/usr/bin/env bash
    set -uo pipefail
    for name in issuer sim anvil anvil2; do
      f={{run}}/$name.pid
      [ -f "$f" ] || continue
      pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped $name (pid $pid)"
      fi
      rm -f "$f"
      [ "${name#anvil}" != "$name" ] && rm -rf "{{run}}/$name-states"
    done
    rm -f {{run}}/networks

# Run every test: the pure reconciler, contract behaviour on anvil, HTTP, end-to-end and crash tests.
test: _npm
    cargo test --workspace --all-targets

# Formatting and clippy with warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# A full mint and redemption through the Alpaca simulator against the running stack; on
# `up-multi`, `just demo anvil2` runs it on the second network.
demo network="anvil":
    NETWORK={{network}} bash scripts/demo.sh

# Benchmarks that print numbers: durable intake at 64 clients, 200/1,000/2,000 mints on a 1-second-block
# anvil (30M gas), intake during the 2,000, and one `goal N:` line per goal of issue 16 at the end.
bench:
    cargo bench --bench issuer

# Auditor report of the local stack from chain and simulator only (the asset list asked of the
# running issuer); `just report html`. On `up-multi`: every network, a section each and a total per
# underlying (json or markdown).
report format="markdown": build
    ISSUER_NETWORKS="$(cat {{run}}/networks 2>/dev/null || true)" {{issuer}} report --format {{format}}
