/**
 * complete-work-2: marks an item done if the worker still holds it, in one
 * atomic step (a check then a separate HDEL could drop a claim another worker
 * took over in between). KEYS[1] the claims hash, KEYS[2] the claim times; ARGV[1] the item, ARGV[2]
 * the worker. Returns 1 if the worker held the item, else 0.
 */
export const COMPLETE_WORK_2 = {
  name: 'tesseraCompleteWork',
  numberOfKeys: 2,
  lua: `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
`,
} as const;
