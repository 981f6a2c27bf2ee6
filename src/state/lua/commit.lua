-- Commits a claim: the caller's in-flight marker becomes the delivered marker 'd' for the
-- route's TTL, only if the marker is still the caller's (its lease did not run out, nobody
-- claimed the ID since). KEYS[1]: the dedup key. ARGV: the caller's marker, the TTL (ms).
-- Returns 1 if committed, 0 if the claim was no longer the caller's (nothing changed).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
  return 1
end
return 0
