/**
 * cas-map-2: compare-and-set of the shard map on its epoch, in one atomic step,
 * announcing the new map on success. Embedded as a string because tsc does not
 * copy `.lua` files into dist/.
 *
 * KEYS[1] map, KEYS[2] epoch
 * ARGV[1] expected epoch (0: no map yet), ARGV[2] new epoch, ARGV[3] new map JSON,
 * ARGV[4] announcement channel
 *
 * Returns {1, new epoch} on success, {0, actual epoch} on a mismatch (nothing written).
 */
export const CAS_MAP_2 = {
  name: 'tesseraCasMap',
  numberOfKeys: 2,
  lua: `
local actual = tonumber(redis.call('GET', KEYS[2]) or '0')
if actual ~= tonumber(ARGV[1]) then
  return {0, actual}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1, tonumber(ARGV[2])}
`,
} as const;
