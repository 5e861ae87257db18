package redisstore

import "github.com/redis/go-redis/v9"

// The scripts build secondary keys from the scope prefix they are given
// (ARGV) instead of receiving every key in KEYS: which index sets an entry
// leaves is only known inside the script, from the entry itself. That is
// legal on Redis Cluster because every key of a scope carries the same hash
// tag and so lives in the slot of KEYS[1]; keys_test.go checks the tag.

// writeScript is the single round trip of every etag-checked write:
// precondition, value, ordered-ID set, secondary indexes, the Redis-side
// generation counter and the invalidation message, all atomically.
//
//	KEYS[1] entry hash (fields v=JSON, e=etag, c=created, u=updated,
//	        x=JSON array of the index entries it is a member of)
//	KEYS[2] ordered-ID sorted set (all scores 0, lexicographic order)
//	ARGV[1] "put" or "del"
//	ARGV[2] ifMatch ("" unconditional, "*" any existing entry)
//	ARGV[3] member: the lower-cased ID
//	ARGV[4] new etag           ARGV[5] now (RFC 3339)
//	ARGV[6] JSON value         ARGV[7] scope prefix "dps:{scope}:"
//	ARGV[8] change channel     ARGV[9] change kind ("" publishes nothing)
//	        (the message is "<kind>:<etag>:<id>"; the etag of this write
//	        lets the writing process recognise its own echo)
//	ARGV[10] 1 to bump the groups generation counter
//	ARGV[11] JSON array of index entries "s:<suffix>" (set) or
//	         "z:<suffix>" (sorted set), suffixes relative to ARGV[7]
//
// Returns {1, created} on success, {0} when ifMatch fails, {-1} when an
// unconditional delete finds nothing.
var writeScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'e', 'c', 'x')
local exists = cur[1] ~= false
local ifMatch = ARGV[2]
if ifMatch ~= '' then
  if not exists then return {0} end
  if ifMatch ~= '*' and ifMatch ~= cur[1] then return {0} end
end
if ARGV[1] == 'del' and not exists then return {-1} end
local prefix, member = ARGV[7], ARGV[3]
if cur[3] then
  for _, ent in ipairs(cjson.decode(cur[3])) do
    local k = prefix .. string.sub(ent, 3)
    if string.sub(ent, 1, 1) == 's' then redis.call('SREM', k, member) else redis.call('ZREM', k, member) end
  end
end
local created = cur[2]
if ARGV[1] == 'del' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], member)
else
  if not created then created = ARGV[5] end
  local idx = cjson.decode(ARGV[11])
  for _, ent in ipairs(idx) do
    local k = prefix .. string.sub(ent, 3)
    if string.sub(ent, 1, 1) == 's' then redis.call('SADD', k, member) else redis.call('ZADD', k, 0, member) end
  end
  redis.call('HSET', KEYS[1], 'v', ARGV[6], 'e', ARGV[4], 'c', created, 'u', ARGV[5], 'x', ARGV[11])
  redis.call('ZADD', KEYS[2], 0, member)
end
if ARGV[10] == '1' then redis.call('INCR', prefix .. 'grpgen') end
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9] .. ':' .. ARGV[4] .. ':' .. member) end
return {1, created}
`)

// listScript reads a page of entries in ID order in one round trip.
//
//	KEYS[1] ordered-ID sorted set
//	ARGV[1] entry key prefix ("dps:{scope}:enr:")
//	ARGV[2] ZRANGEBYLEX start ("-" or "(<cursor>")
//	ARGV[3] count (-1 for all)
//
// Returns a flat array: id, v, e, c, u for each entry.
var listScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', ARGV[1] .. id, 'v', 'e', 'c', 'u')
  if h[1] then
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
    out[#out + 1] = h[3]
    out[#out + 1] = h[4]
  end
end
return out
`)

// certScript answers GroupsByCertificate in one round trip: groups that
// sign with the certificate, plus groups that reference (by name) a CA
// entry holding it. The join runs against the current CA entries, so
// replacing a CA certificate re-points references without touching groups.
//
//	KEYS[1] set of groups signing with the certificate ("ix:cert:<hex>")
//	ARGV[1] scope prefix   ARGV[2] thumbprint hex
//
// Returns a flat array id, v, e, c, u per group, unordered.
var certScript = redis.NewScript(`
local prefix = ARGV[1]
local seen, ids = {}, {}
local function add(list)
  for _, id in ipairs(list) do
    if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
  end
end
add(redis.call('SMEMBERS', KEYS[1]))
for _, ca in ipairs(redis.call('SMEMBERS', prefix .. 'ix:cacert:' .. ARGV[2])) do
  add(redis.call('SMEMBERS', prefix .. 'ix:grpca:' .. ca))
end
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', prefix .. 'grp:' .. id, 'v', 'e', 'c', 'u')
  if h[1] then
    out[#out + 1] = id
    out[#out + 1] = h[1]
    out[#out + 1] = h[2]
    out[#out + 1] = h[3]
    out[#out + 1] = h[4]
  end
end
return out
`)

// commitScript is the single round trip of a registration: the etag-checked
// record write with its indexes (as writeScript does it), the operation
// with its TTL and the event, all or nothing. Redis runs a script without
// interleaving other commands, so the precondition holds for every write.
//
//	KEYS[1] record hash   KEYS[2] ordered-ID set of records
//	KEYS[3] operation key KEYS[4] event stream
//	ARGV[1] ifMatch ("" unconditional, "*" any existing record)
//	ARGV[2] "1" when the record must not exist yet
//	ARGV[3] member: the lower-cased registration ID
//	ARGV[4] new etag      ARGV[5] now (RFC 3339)
//	ARGV[6] record JSON   ARGV[7] scope prefix
//	ARGV[8] JSON array of index entries (see writeScript)
//	ARGV[9], ARGV[10] the operation JSON before and after the record's
//	        creation time, which only the script knows (it keeps the
//	        stored one)
//	ARGV[11] operation TTL in milliseconds (0: already expired, delete)
//	ARGV[12] event JSON   ARGV[13] approximate stream length to keep
//
// Returns {1, created, event ID}, or {0} when the precondition fails (and
// nothing was written).
var commitScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'e', 'c', 'x')
local exists = cur[1] ~= false
if ARGV[2] == '1' and exists then return {0} end
local ifMatch = ARGV[1]
if ifMatch ~= '' then
  if not exists then return {0} end
  if ifMatch ~= '*' and ifMatch ~= cur[1] then return {0} end
end
local prefix, member = ARGV[7], ARGV[3]
if cur[3] then
  for _, ent in ipairs(cjson.decode(cur[3])) do
    local k = prefix .. string.sub(ent, 3)
    if string.sub(ent, 1, 1) == 's' then redis.call('SREM', k, member) else redis.call('ZREM', k, member) end
  end
end
local created = cur[2]
if not created then created = ARGV[5] end
for _, ent in ipairs(cjson.decode(ARGV[8])) do
  local k = prefix .. string.sub(ent, 3)
  if string.sub(ent, 1, 1) == 's' then redis.call('SADD', k, member) else redis.call('ZADD', k, 0, member) end
end
redis.call('HSET', KEYS[1], 'v', ARGV[6], 'e', ARGV[4], 'c', created, 'u', ARGV[5], 'x', ARGV[8])
redis.call('ZADD', KEYS[2], 0, member)
local ttl = tonumber(ARGV[11])
if ttl > 0 then
  redis.call('SET', KEYS[3], ARGV[9] .. created .. ARGV[10], 'PX', ttl)
else
  redis.call('DEL', KEYS[3])
end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[13], '*', 'e', ARGV[12])
return {1, created, id}
`)

var allScripts = []*redis.Script{writeScript, listScript, certScript, commitScript}
