-- Releases a claim: deletes the caller's in-flight marker, only if it is still the caller's,
-- so a slow replica never deletes another's claim or a delivered marker.
-- KEYS[1]: the dedup key. ARGV[1]: the caller's marker. Returns 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
