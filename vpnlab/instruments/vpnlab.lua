-- vpnlab.lua: a Wireshark/tshark dissector for vpnlab's handshake and control messages.
--
--   tshark -X lua_script:vpnlab/instruments/vpnlab.lua -r capture.pcapng
--   vpnlab capture decode capture.pcapng          (loads this file itself)
--
-- Run the first as yourself, not as root: Wireshark 4.2 and later load no script named on the
-- command line as root (4.0 did where /etc/wireshark/init.lua allowed it, as Debian 12's does).
-- vpnlab capture decode, as root, runs tshark as nobody (vpnlab/instruments/capture.py).
--
-- On UDP port 4500 tshark's udpencap dissector takes every datagram: four zero bytes (the
-- RFC 3948 non-ESP marker) make it IKE (isakmp), anything else ESP. Our handshakes start with
-- that marker, so without this file a Hello shows as a bogus ISAKMP message. This file shows,
-- as protocol "vpnlab":
--
--   marker 00000000, type 1, cipher 1|2, 62 bytes   PSK Hello        (vpnlab/wire/handshake.py)
--   marker 00000000, type 2, cipher 1|2, 59 bytes   PSK Welcome
--   marker 00000000, type 3, cipher 1|2, 146 bytes  identity Hello   (vpnlab/wire/identity.py)
--                                                    ... its last 32 bytes: mac1, mac2
--   marker 00000000, type 4, cipher 1|2, 63 bytes   identity Welcome
--   marker 00000000, type 5, cipher 1|2, 50 bytes   cookie reply     (vpnlab/core/cookie.py)
--   "VPNLAB/1 <word> ...\n"                          a plain control line (vpnlab/wire/plain.py)
--
-- Everything else (ESP, the 0xFF NAT-keepalive, the plain format's raw IP, a message of the
-- wrong length, real IKE) goes to udpencap exactly as without this file: same stack
-- (eth:ethertype:ip:udp:udpencap:esp), same ESP decryption with esp_sa rows.
--
-- How: "vpnlab" takes udpencap's place in the udp.port table. A dissector that calls another
-- one stays in frame.protocols (udp:vpnlab:udpencap:esp), so for a datagram that is not ours
-- it does not call udpencap: it puts udpencap at the port UDP tries next and returns 0 ("not
-- mine"), and UDP itself hands the datagram to udpencap. UDP tries the lower port first, then
-- the higher one, so "vpnlab" also sits at every free port below 4500 (a peer whose port a NAT
-- rewrote): called there for a datagram whose other port is not 4500, it just returns 0, as
-- if nothing were registered. The swapped entries go back before the next packet (here and in
-- a postdissector). Nothing is printed: tshark's output stays as the code parses it.

local PORT = 4500
local HANDSHAKE = {
  [1] = { message = "Hello", mode = "psk", size = 62 },
  [2] = { message = "Welcome", mode = "psk", size = 59 },
  [3] = { message = "Hello", mode = "identity", size = 146 },
  [4] = { message = "Welcome", mode = "identity", size = 63 },
  [5] = { message = "Cookie reply", mode = "identity", size = 50 },
}
local CIPHERS = { [1] = "esp-null", [2] = "esp-aes-gcm" }
local TYPES = {
  [1] = "PSK Hello", [2] = "PSK Welcome", [3] = "identity Hello", [4] = "identity Welcome",
  [5] = "identity cookie reply",
}
local MAGIC = "VPNLAB/1 "
local MAX_CONTROL = 64

local made, vpnlab = pcall(Proto, "vpnlab", "vpnlab teaching VPN handshake and control")
if not made then
  return -- loaded already (a plugin folder and -X lua_script both): the first copy serves
end
local F = {
  marker = ProtoField.bytes("vpnlab.marker", "Non-ESP marker"),
  type = ProtoField.uint8("vpnlab.type", "Type", base.DEC, TYPES),
  message = ProtoField.string("vpnlab.message", "Message"),
  mode = ProtoField.string("vpnlab.mode", "Mode"),
  cipher = ProtoField.uint8("vpnlab.cipher", "Cipher", base.DEC, CIPHERS),
  timestamp = ProtoField.uint64("vpnlab.timestamp", "Timestamp (microseconds)"),
  time = ProtoField.absolute_time("vpnlab.time", "Timestamp", base.UTC),
  public_key = ProtoField.bytes("vpnlab.public_key", "X25519 public key"),
  mac = ProtoField.bytes("vpnlab.mac", "MAC (HMAC-SHA-256-128)"),
  client_address = ProtoField.ipv4("vpnlab.client_address", "Client tunnel address"),
  prefix = ProtoField.uint8("vpnlab.prefix", "Prefix length"),
  address = ProtoField.string("vpnlab.address", "Client tunnel interface"),
  tag = ProtoField.bytes("vpnlab.tag", "Tag (HMAC-SHA-256-128)"),
  ephemeral = ProtoField.bytes("vpnlab.ephemeral", "Noise ephemeral key"),
  encrypted_static = ProtoField.bytes("vpnlab.encrypted_static", "Encrypted static key"),
  encrypted_payload = ProtoField.bytes("vpnlab.encrypted_payload", "Encrypted payload"),
  mac1 = ProtoField.bytes("vpnlab.mac1", "mac1 (BLAKE2s-128, keyed by the server's key)"),
  mac2 = ProtoField.bytes("vpnlab.mac2", "mac2 (BLAKE2s-128, keyed by the cookie)"),
  has_cookie = ProtoField.bool("vpnlab.has_cookie", "mac2 carries a cookie"),
  nonce = ProtoField.bytes("vpnlab.nonce", "Nonce"),
  encrypted_cookie = ProtoField.bytes("vpnlab.encrypted_cookie", "Encrypted cookie"),
  magic = ProtoField.string("vpnlab.magic", "Magic"),
  control = ProtoField.string("vpnlab.control", "Control word"),
  argument = ProtoField.string("vpnlab.argument", "Argument"),
  line = ProtoField.string("vpnlab.line", "Control line"),
}
vpnlab.fields = {
  F.marker, F.type, F.message, F.mode, F.cipher, F.timestamp, F.time, F.public_key, F.mac,
  F.client_address, F.prefix, F.address, F.tag, F.ephemeral, F.encrypted_static,
  F.encrypted_payload, F.mac1, F.mac2, F.has_cookie, F.nonce, F.encrypted_cookie, F.magic,
  F.control, F.argument, F.line,
}

-- The handshake: the six header bytes, then each type's visible fields.
local function header(tvb, tree, kind)
  tree:add(F.marker, tvb(0, 4))
  tree:add(F.type, tvb(4, 1))
  tree:add(F.message, tvb(4, 1), kind.message):set_generated()
  tree:add(F.mode, tvb(4, 1), kind.mode):set_generated()
  tree:add(F.cipher, tvb(5, 1))
end

local BODY = {
  [1] = function(tvb, tree) -- PSK Hello: timestamp (8), client X25519 (32), MAC (16)
    local stamp = tvb(6, 8):uint64()
    tree:add(F.timestamp, tvb(6, 8))
    local seconds = (stamp / 1000000):tonumber()
    local micros = (stamp % 1000000):tonumber()
    tree:add(F.time, tvb(6, 8), NSTime.new(seconds, micros * 1000)):set_generated()
    tree:add(F.public_key, tvb(14, 32)):append_text(" (client)")
    tree:add(F.mac, tvb(46, 16))
  end,
  [2] = function(tvb, tree) -- PSK Welcome: server X25519 (32), IPv4 (4), prefix (1), tag (16)
    tree:add(F.public_key, tvb(6, 32)):append_text(" (server)")
    tree:add(F.client_address, tvb(38, 4))
    tree:add(F.prefix, tvb(42, 1))
    local address = tostring(tvb(38, 4):ipv4()) .. "/" .. tvb(42, 1):uint()
    tree:add(F.address, tvb(38, 5), address):set_generated()
    tree:add(F.tag, tvb(43, 16))
  end,
  [3] = function(tvb, tree) -- identity Hello: Noise e (32), s (48), payload (28), mac1, mac2
    tree:add(F.ephemeral, tvb(6, 32))
    tree:add(F.encrypted_static, tvb(38, 48))
    tree:add(F.encrypted_payload, tvb(86, 28))
    tree:add(F.mac1, tvb(114, 16))
    tree:add(F.mac2, tvb(130, 16))
    local zero = tvb(130, 16):bytes():tohex() == string.rep("00", 16)
    tree:add(F.has_cookie, tvb(130, 16), not zero):set_generated()
  end,
  [4] = function(tvb, tree) -- identity Welcome: Noise e (32), encrypted payload (25)
    tree:add(F.ephemeral, tvb(6, 32))
    tree:add(F.encrypted_payload, tvb(38, 25))
  end,
  [5] = function(tvb, tree) -- cookie reply: nonce (12), ChaCha20-Poly1305(cookie) (32)
    tree:add(F.nonce, tvb(6, 12))
    tree:add(F.encrypted_cookie, tvb(18, 32))
  end,
}

local function handshake_kind(tvb)
  local size = tvb:len()
  if size < 6 or tvb:reported_len() ~= size or tvb(0, 4):uint() ~= 0 then
    return nil
  end
  local kind = HANDSHAKE[tvb(4, 1):uint()]
  if kind == nil or kind.size ~= size or CIPHERS[tvb(5, 1):uint()] == nil then
    return nil
  end
  return kind
end

local function dissect_handshake(tvb, pinfo, tree, kind)
  local cipher = CIPHERS[tvb(5, 1):uint()]
  local summary = string.format("%s (%s, %s)", kind.message, kind.mode, cipher)
  pinfo.cols.protocol = "vpnlab"
  pinfo.cols.info = "vpnlab " .. summary
  local subtree = tree:add(vpnlab, tvb(), "vpnlab " .. summary)
  header(tvb, subtree, kind)
  BODY[tvb(4, 1):uint()](tvb, subtree)
  return tvb:len()
end

-- The plain format's control lines: "VPNLAB/1 HELLO\n", "VPNLAB/1 WELCOME 10.8.0.2/24\n" ...
local function is_control(tvb)
  local size = tvb:len()
  return size > #MAGIC and size <= MAX_CONTROL and tvb:reported_len() == size
    and tvb(0, #MAGIC):string() == MAGIC
end

local function dissect_control(tvb, pinfo, tree)
  local line = tvb():string():gsub("\n$", "")
  local rest = line:sub(#MAGIC + 1)
  local word_start, word_end = rest:find("%S+")
  local word = word_start and rest:sub(word_start, word_end) or ""
  local arg_start, arg_end = rest:find("%S.*%S", (word_end or #rest) + 1)
  if arg_start == nil then
    arg_start, arg_end = rest:find("%S", (word_end or #rest) + 1)
  end
  local argument = arg_start and rest:sub(arg_start, arg_end) or ""
  local summary = argument ~= "" and (word .. " " .. argument) or word
  pinfo.cols.protocol = "vpnlab"
  pinfo.cols.info = "vpnlab " .. summary .. " (plain)"
  local subtree = tree:add(vpnlab, tvb(), "vpnlab " .. summary .. " (plain)")
  subtree:add(F.line, tvb(0, #line), line)
  subtree:add(F.magic, tvb(0, #MAGIC - 1))
  subtree:add(F.mode, tvb(0, #MAGIC - 1), "plain"):set_generated()
  if word_start then
    subtree:add(F.control, tvb(#MAGIC + word_start - 1, #word), word)
  end
  if arg_start then
    subtree:add(F.argument, tvb(#MAGIC + arg_start - 1, #argument), argument)
  end
  return tvb:len()
end

-- Not ours: let UDP give the datagram to udpencap itself (see the header of this file).
local udp_port = DissectorTable.get("udp.port")
local udpencap = udp_port:get_dissector(PORT)
local swapped = {} -- port -> the dissector it had (false: none), while udpencap sits there

local function restore()
  for port, old in pairs(swapped) do
    if old then
      udp_port:add(port, old)
    else
      udp_port:remove(port, udpencap)
    end
  end
  swapped = {}
end

local function pass_to_udpencap(tvb, pinfo, tree)
  if udpencap == nil then
    return 0 -- a tshark without udpencap: UDP goes on as it would without us
  end
  local low = math.min(pinfo.src_port, pinfo.dst_port)
  local high = math.max(pinfo.src_port, pinfo.dst_port)
  if pinfo.match_uint == low then
    -- UDP tries the high port next (4500 again when both ports are 4500).
    swapped[high] = udp_port:get_dissector(high) or false
    udp_port:add(high, udpencap)
    return 0
  end
  -- Called for the high port: UDP tries no other port, so udpencap goes below us.
  return udpencap:call(tvb, pinfo, tree)
end

function vpnlab.dissector(tvb, pinfo, tree)
  restore()
  if pinfo.src_port ~= PORT and pinfo.dst_port ~= PORT then
    return 0 -- a free port below 4500 between two other ports: not for us, nor for udpencap
  end
  local kind = handshake_kind(tvb)
  if kind ~= nil then
    return dissect_handshake(tvb, pinfo, tree, kind)
  end
  if is_control(tvb) then
    return dissect_control(tvb, pinfo, tree)
  end
  return pass_to_udpencap(tvb, pinfo, tree)
end

udp_port:add(PORT, vpnlab)
for port = 1, PORT - 1 do
  if udp_port:get_dissector(port) == nil then
    udp_port:add(port, vpnlab)
  end
end

local vpnlab_restore = Proto("vpnlab_restore", "vpnlab: udp.port table restored")
function vpnlab_restore.dissector()
  restore()
end
register_postdissector(vpnlab_restore)
