#!/usr/bin/env bash
# A full mint and then a redemption against the running local stack (`just up`), through the
# Alpaca simulator. Prints the AP's balance, the callback Alpaca received, and the burn.
set -euo pipefail
cd "$(dirname "$0")/.."

ISSUER=target/debug/issuer
URL=${ISSUER_URL:-http://127.0.0.1:8000}
SIM=${ALPACA_SIM_URL:-http://127.0.0.1:9000}
NETWORK=${NETWORK:-anvil}   # `just up-multi` also serves anvil2 (chain id 31338 on :8546)
case "$NETWORK" in
  anvil) RPC=${RPC_URL:-http://127.0.0.1:8545}; DEPLOY=.run/deploy.json ;;
  *) RPC=${RPC_URL:-http://127.0.0.1:8546}; DEPLOY=.run/deploy-$NETWORK.json ;;
esac
KEY=${ISSUER_API_KEY:-local-dev-alpaca-key-0123456789abcdef}
OPKEY=${ISSUER_OPERATOR_KEY:-local-dev-operator-key-0123456789abcdef}
AP=0x70997970C51812dc3A010C7d01b50e0d17dc79C8   # anvil's second dev account (unlocked in anvil)
BOT=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266  # the issuer's bot: anvil's first dev account
EMAIL=ap-demo@example.com

curl -sf "$URL/health" >/dev/null || { echo "the issuer is not running: run 'just up' first"; exit 1; }
[ -f "$DEPLOY" ] || { echo "no $DEPLOY: is network $NETWORK part of the running stack?"; exit 1; }
VAULT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vault"])' "$DEPLOY")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
rpc() { curl -sf -X POST -H 'content-type: application/json' --data "$1" "$RPC"; }
balance() {
  local data="0x70a08231000000000000000000000000${1#0x}"
  rpc "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_call\",\"params\":[{\"to\":\"$VAULT\",\"data\":\"$data\"},\"latest\"]}" |
    python3 -c 'import json,sys; v=int(json.load(sys.stdin)["result"],16); print(f"{v//10**18}.{v%10**18:018d}".rstrip("0").rstrip("."))'
}

echo "== onboarding the AP ($EMAIL, wallet $AP)"
CLIENT=$($ISSUER operator --operator-key "$OPKEY" --issuer-url "$URL" register-account --email "$EMAIL" | json '["client_id"]')
curl -s -o /dev/null -X POST "$URL/accounts/connect" -H "X-API-KEY: $KEY" -H 'content-type: application/json' \
  --data "{\"email\":\"$EMAIL\",\"account\":\"ALP-DEMO-1\"}"
curl -sf -o /dev/null -X POST "$URL/accounts/$CLIENT/wallets" -H "X-API-KEY: $KEY" -H 'content-type: application/json' \
  --data "{\"wallet\":\"$AP\"}"
echo "client_id $CLIENT"

BEFORE=$(balance "$AP")
TRID="demo-$(date +%s)"
echo "== mint 1.5 AAPL -> tAAPL on $NETWORK (tokenization_request_id $TRID); AP balance before: $BEFORE"
$ISSUER alpaca-sim mint --sim-url "$SIM" --issuer-url "$URL" --issuer-api-key "$KEY" \
  --qty 1.5 --wallet "$AP" --client-external-account-id "$CLIENT" --tokenization-request-id "$TRID" \
  --network "$NETWORK"
for _ in $(seq 1 100); do
  n=$(curl -sf "$SIM/sim/state" | python3 -c "import json,sys; print(json.load(sys.stdin)['mint_callback_counts'].get('$TRID',0))")
  [ "$n" -ge 1 ] && break
  sleep 0.2
done
echo "AP balance after the mint: $(balance "$AP") tAAPL"
echo "callback Alpaca received (the client as client_external_account_id, never the deprecated client_id):"
curl -sf "$SIM/sim/state" | python3 -c "
import json,sys
s=json.load(sys.stdin)
for c in s['mint_callbacks']:
    if c.get('tokenization_request_id')=='$TRID' or c.get('body',{}).get('tokenization_request_id')=='$TRID':
        print(json.dumps(c, indent=2))"

echo "== redeem 0.5 tAAPL: the AP sends them to the bot $BOT"
DATA="0xa9059cbb000000000000000000000000${BOT#0x}$(printf '%064x' 500000000000000000)"
TX=$(rpc "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_sendTransaction\",\"params\":[{\"from\":\"$AP\",\"to\":\"$VAULT\",\"data\":\"$DATA\"}]}" | json '["result"]')
echo "transfer tx $TX"
for _ in $(seq 1 150); do
  state=$($ISSUER redemption --operator-key "$OPKEY" --issuer-url "$URL" list |
    python3 -c "import json,sys; r=[x for x in json.load(sys.stdin)['redemptions'] if x['tx_hash']=='$TX']; print(r[0]['state']['state'] if r else 'unseen')")
  [ "$state" = "burned" ] && break
  sleep 0.2
done
echo "redemption state: $state"
$ISSUER redemption --operator-key "$OPKEY" --issuer-url "$URL" list |
  python3 -c "import json,sys; r=[x for x in json.load(sys.stdin)['redemptions'] if x['tx_hash']=='$TX']; print(json.dumps(r[0], indent=2))"
echo "AP balance after the redemption: $(balance "$AP") tAAPL; bot holds $(balance "$BOT")"
