"""Where the Redis broker keeps a user's data, and the Lua scripts that read and write it.

Every key and the channel of one user carry the same hash tag, so on Redis Cluster they share
one hash slot: each script touches one slot, and the user's channel lives on the node that owns
it (sharded pub/sub). The data model itself is described in redis.py.
"""

from __future__ import annotations

from dataclasses import dataclass


def user_tag(user_id: str) -> str:
    """The user's hash tag, `{...}` included: one non-empty tag for any user id. `%`, `{` and
    `}` are percent-encoded, so no user id can end the tag early or look like another's."""
    escaped = user_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return "{" + escaped + "}"


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys and channel of one user."""

    # Hash: `epoch` and `seq`, the user's head. Never expires once the user has an event.
    head: str
    # Stream of the user's events, entry ids `<seq>-0`.
    history: str
    # Prefix of the user's dedupe keys: `<dedupe_prefix><event id>`.
    dedupe_prefix: str
    channel: str

    def dedupe(self, event_id: str) -> str:
        return self.dedupe_prefix + event_id


def user_keys(prefix: str, user_id: str) -> UserKeys:
    base = f"{prefix}:{user_tag(user_id)}"
    return UserKeys(f"{base}:head", f"{base}:history", f"{base}:dedupe:", f"{base}:events")


# Sets `epoch` and `seq` to the user's head in effect: the stored one, unless Redis has none (it
# lost the user's data, or never had any) or has a lower `seq` in the epoch the caller last saw
# for this user than the caller saw (it lost the last writes); then the epoch is the candidate.
# Offsets go on from where Redis is, so the new epoch never reissues an offset a client holds in
# it. KEYS[1] is the head; `candidate`, `seen_epoch` and `seen_seq` hold the caller's ARGV.
ENSURE_EPOCH = """
local head = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch, seq = head[1], tonumber(head[2] or '0')
local fresh = false
if not epoch then
  -- Nothing of the user survives as a head: history left from a lost head is of a dead epoch,
  -- and its ids would refuse the offsets starting again at 1.
  redis.call('DEL', KEYS[2])
  epoch, seq, fresh = candidate, 0, true
elseif epoch == seen_epoch and seq < tonumber(seen_seq) then
  epoch, fresh = candidate, true
end
"""

# KEYS: head, history, dedupe. ARGV: candidate epoch, dedupe ms, history size, history ttl ms,
# frame head, frame tail, event id, now ms, channel, epoch seen, seq seen, publish command
# (PUBLISH, or SPUBLISH on Redis Cluster).
# The channel message is `<seq> <epoch> <sent ms> <event id bytes>\n<event id><frame>`: a
# replica hands the frame on as it is, and reads the few fields it needs from the header.
PUBLISH_SCRIPT = """
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) == false then
  return false
end
local candidate, seen_epoch, seen_seq = ARGV[1], ARGV[10], ARGV[11]
""" + ENSURE_EPOCH + """
seq = seq + 1
redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq)
redis.call('PERSIST', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0',
  'h', ARGV[5], 'x', ARGV[6], 'i', ARGV[7], 't', ARGV[8], 'p', epoch)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local frame = ARGV[5] .. seq .. ',"epoch":"' .. epoch .. ARGV[6]
local listeners = redis.call(ARGV[12], ARGV[9],
  seq .. ' ' .. epoch .. ' ' .. ARGV[8] .. ' ' .. #ARGV[7] .. '\\n' .. ARGV[7] .. frame)
return {seq, epoch, listeners}
"""

# KEYS: head, history. ARGV: candidate epoch, first wanted seq (0: the newest entry only), epoch
# seen, seq seen, history ttl ms. A user read before any event gets a head with `seq` 0 that
# expires after the history ttl (so idle users cost nothing for long); the first event keeps it.
READ_SCRIPT = """
local candidate, seen_epoch, seen_seq = ARGV[1], ARGV[3], ARGV[4]
""" + ENSURE_EPOCH + """
if fresh then
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq)
  if seq == 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
  end
end
local first = tonumber(ARGV[2])
if first == 0 then
  first = seq
end
local entries = {}
if first > 0 and first <= seq then
  entries = redis.call('XRANGE', KEYS[2], first .. '-0', '+')
end
return {epoch, seq, entries}
"""

# KEYS: head, history. ARGV: the epoch found to have lost writes, its replacement. Returns the
# epoch in effect: the replacement, or the one another replica (or an empty Redis) put there
# first.
REPLACE_EPOCH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'seq', 0)
  return ARGV[2]
end
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  return ARGV[2]
end
return epoch
"""
