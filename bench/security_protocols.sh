#!/usr/bin/env bash
# Issue 14's figures in one run on one broker: produce/consume throughput over PLAINTEXT,
# SSL and SASL_SSL (SCRAM-SHA-512) with confluent-kafka (bench/e2e.py), the protocols
# alternating in each round; then SASL connection set-ups per second (bench/e2e_sasl.py);
# then the authorizer overhead (bench/authorizer_overhead.py).
# Usage: bench/security_protocols.sh [ROUNDS]   (results in $OUT, default a temp dir)
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
OUT=${OUT:-$(mktemp -d /tmp/pystream-secbench.XXXXXX)}
export PYTHONPATH=src:tests
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from tls_certs import CertificateAuthority
CertificateAuthority(Path(sys.argv[1]) / "pki").issue("broker", "localhost")
PY
for m in SCRAM-SHA-256 SCRAM-SHA-512; do
  python -m pystream users add bench --password bench-pw --mechanism $m --log-dirs "$OUT/data"
done
python -m pystream serve --override log.dirs="$OUT/data" \
  --override listeners=PLAINTEXT://127.0.0.1:19201,SSL://127.0.0.1:19202,SASL_SSL://127.0.0.1:19203,SASL_PLAINTEXT://127.0.0.1:19204 \
  --override ssl.keystore.location="$OUT/pki/broker.pem" --override ssl.truststore.location="$OUT/pki/ca.pem" \
  --log-level WARNING > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null' EXIT
python - <<'PY'
import socket, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", 19204), 1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("the broker did not start: see broker.log")
        time.sleep(0.1)
PY
SC=produce-100b,consume-100b,produce-1k,consume-1k
TLS=(--client-config ssl.ca.location="$OUT/pki/ca.pem")
SASL=(--client-config sasl.mechanisms=SCRAM-SHA-512 --client-config sasl.username=bench
      --client-config sasl.password=bench-pw)
for round in $(seq "$ROUNDS"); do
  echo "== round $round PLAINTEXT" >> "$OUT/e2e.txt"
  timeout 600 python bench/e2e.py --bootstrap 127.0.0.1:19201 --scenario $SC >> "$OUT/e2e.txt" 2>&1
  echo "== round $round SSL" >> "$OUT/e2e.txt"
  timeout 600 python bench/e2e.py --bootstrap 127.0.0.1:19202 --scenario $SC \
    --client-config security.protocol=SSL "${TLS[@]}" >> "$OUT/e2e.txt" 2>&1
  echo "== round $round SASL_SSL" >> "$OUT/e2e.txt"
  timeout 600 python bench/e2e.py --bootstrap 127.0.0.1:19203 --scenario $SC \
    --client-config security.protocol=SASL_SSL "${TLS[@]}" "${SASL[@]}" >> "$OUT/e2e.txt" 2>&1
done
for i in $(seq "$ROUNDS"); do
  echo "== sasl setups $i" >> "$OUT/sasl.txt"
  timeout 120 python bench/e2e_sasl.py 127.0.0.1:19201 127.0.0.1:19204 5 4 >> "$OUT/sasl.txt" 2>&1
done
kill $BROKER; wait $BROKER 2>/dev/null
timeout 900 python bench/authorizer_overhead.py --runs "$ROUNDS" > "$OUT/authz.txt" 2>&1
echo "results in $OUT: e2e.txt sasl.txt authz.txt"
