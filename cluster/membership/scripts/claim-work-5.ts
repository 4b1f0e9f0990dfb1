/**
 * claim-work-5: the claim rule of work-queue.ts (`claimRule`) in one atomic
 * step. Embedded as a string because tsc does not copy `.lua` files into dist/.
 *
 * KEYS[1] the plan (string "epochs:blocksPerEpoch"), KEYS[2] the next
 * never-claimed item, KEYS[3] the claims (hash item → worker id), KEYS[4] the
 * worker lease key of an empty id (a holder's lease key is it with the id
 * appended: every key shares the cluster's hash tag), KEYS[5] when each claim
 * was made (hash item → ms, Redis's clock).
 * ARGV[1] the claiming worker, ARGV[2] its plan, ARGV[3] the items in the
 * plan, ARGV[4] its floor, ARGV[5] the grace in ms.
 *
 * Returns {'item', n, handedOut}, {'wait'}, {'finished'} or {'plan', heldPlan} when the
 * claim's plan differs from the queue's.
 */
export const CLAIM_WORK_5 = {
  name: 'tesseraClaimWork',
  numberOfKeys: 5,
  lua: `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local plan = redis.call('GET', KEYS[1])
if not plan then
  redis.call('SET', KEYS[1], ARGV[2])
elseif plan ~= ARGV[2] then
  return {'plan', plan}
end
local claims = redis.call('HGETALL', KEYS[3])
local best = nil
for i = 1, #claims, 2 do
  local item = tonumber(claims[i])
  local holder = claims[i + 1]
  if (best == nil or item < best) and (holder == ARGV[1] or (redis.call('EXISTS', KEYS[4] .. holder) == 0 and now - tonumber(redis.call('HGET', KEYS[5], claims[i]) or '0') >= tonumber(ARGV[5]))) then
    best = item
  end
end
if best ~= nil then
  redis.call('HSET', KEYS[3], best, ARGV[1])
  redis.call('HSET', KEYS[5], best, now)
  return {'item', best, math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[4]))}
end
local nextItem = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[4]))
if nextItem < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], nextItem + 1)
  redis.call('HSET', KEYS[3], nextItem, ARGV[1])
  redis.call('HSET', KEYS[5], nextItem, now)
  return {'item', nextItem, nextItem + 1}
end
redis.call('SET', KEYS[2], nextItem)
if #claims > 0 then return {'wait'} end
return {'finished'}
`,
} as const;
