#!/usr/bin/env bash
# Regenerates the reference captures in captures/ from the namespace lab (root).
#
# For every cipher the VPN accepts (plain, then esp-null and esp-aes-gcm), on the VPN client r1:
#   {cipher}-ping-eth0.pcapng / {cipher}-ping-tun0.pcapng   ping -c 3 203.0.113.10 (the web host)
#   {cipher}-ftp-eth0.pcapng  / {cipher}-ftp-tun0.pcapng    one passive FTP session to 10.8.0.1
#   {cipher}.esp_sa                                         the session's keys (ESP ciphers)
# eth0 and tun0 are captured at the same time, so each pair shows the same packets outside and
# inside the tunnel (eth0 with the capture filter "not arp": the neighbour checks come at random). The table between the markers in captures/README.md is rewritten from what
# tshark decodes. Uses its own lab prefix (default vmkcap-) and removes that lab on exit.
#
#   sudo scripts/make-captures.sh [CIPHER...]
#
# Progress lines ([vpnlab] ...) go to stderr; what was made (one line a file) to stdout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
setup course
cd "$VPNLAB_ROOT"
PREFIX=${VPNLAB_CAPTURE_PREFIX:-vmkcap-}
OUT="$VPNLAB_ROOT/captures"

cleanup() { "$VENV/bin/vpnlab" lab down --prefix "$PREFIX" >/dev/null 2>&1 || true; }
trap cleanup EXIT

say "reference captures: lab $PREFIX, into $OUT"
"$VENV/bin/python" - "$PREFIX" "$OUT" "$@" <<'PY'
import re
import sys
import tempfile
from pathlib import Path

from vpnlab import lab
from vpnlab.instruments import capture, ftp
from vpnlab.wire.ciphers import CIPHERS

prefix, out = sys.argv[1], Path(sys.argv[2])
wanted = sys.argv[3:] or list(CIPHERS)
out.mkdir(exist_ok=True)
PING = ["ping", "-c", "3", "-i", "0.2", "-W", "2", "203.0.113.10"]
TEXT = b"Hello from r1: this file crossed the tunnel by FTP (vpnlab reference capture).\n" * 3


def pair(name: str, traffic) -> list[Path]:
    """Capture r1's eth0 (without ARP) and tun0 together while ``traffic()`` runs."""
    files = [out / f"{name}-eth0.pcapng", out / f"{name}-tun0.pcapng"]
    with capture.start_capture(prefix, "r1", "eth0", files[0], 200, 30, "not arp"), \
         capture.start_capture(prefix, "r1", "tun0", files[1], 200, 30):
        traffic()
    return files


made: list[tuple[Path, str, str]] = []
keys: dict[str, Path] = {}
lab.up(prefix=prefix, cipher="plain")
for cipher in wanted:
    try:
        lab.start_vpn(prefix, cipher)
    except Exception as exc:  # an ESP cipher that does not work yet: say so, go on
        print(f"  {cipher}: skipped, the VPN does not start: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        continue
    run = lambda: lab.exec_in(prefix, "r1", PING, check=True, capture_output=True, timeout=15)
    for f in pair(f"{cipher}-ping", run):
        made.append((f, cipher, "ping -c 3 203.0.113.10 from r1"))
    with tempfile.TemporaryDirectory() as tmp, ftp.lab_server(prefix) as server:
        upload = Path(tmp) / "hello.txt"
        upload.write_bytes(TEXT)
        run = lambda: ftp.lab_transfer(prefix, mode="passive", path=upload)
        for f in pair(f"{cipher}-ftp", run):
            made.append((f, cipher, "one passive FTP session r1 -> 10.8.0.1: STOR + RETR"))
    rows = capture.lab_keys(prefix)  # the server's esp_sa export, while the session is up
    if rows and cipher != "plain":
        keys[cipher] = out / f"{cipher}.esp_sa"
        head = (f"# esp_sa rows of the {cipher} session in {cipher}-*-eth0.pcapng: a throwaway\n"
                f"# lab session's keys, published on purpose. vpnlab capture decode F --keys K\n")
        keys[cipher].write_text(head + "\n".join(rows) + "\n")
    elif cipher != "plain":
        (out / f"{cipher}.esp_sa").unlink(missing_ok=True)
        print(f"  {cipher}: no key export yet, captures are not decryptable", file=sys.stderr)
lab.down(prefix)

lines = ["| file | bytes | traffic | stacks (packets) |", "|---|---|---|---|"]
for path in keys.values():
    path.chmod(0o644)
for path, cipher, what in made:
    path.chmod(0o644)
    counts = capture.stack_counts(path)
    stacks = "<br>".join(f"`{s}` ({n})" for s, n in counts.items())
    lines.append(f"| `{path.name}` | {path.stat().st_size} | {what} | {stacks} |")
    if path.name.endswith("eth0.pcapng") and cipher in keys:
        counts = capture.stack_counts(path, keys[cipher])
        stacks = "<br>".join(f"`{s}` ({n})" for s, n in counts.items())
        lines.append(f"| `{path.name}` + `{keys[cipher].name}` | | decrypted | {stacks} |")
    print(f"  {path.name}: {path.stat().st_size} B, {sum(counts.values())} packets")
readme = out / "README.md"
text = readme.read_text() if readme.exists() else "<!-- table -->\n<!-- /table -->\n"
table = "<!-- table -->\n" + "\n".join(lines) + "\n<!-- /table -->"
readme.write_text(re.sub(r"<!-- table -->.*?<!-- /table -->", lambda m: table, text, flags=re.S))
print(f"  table of {len(made)} captures written to {readme}")
PY
say "done; lab $PREFIX removed"
