/**
 * claim-work-4: the claim rule of work-queue.ts (`claimRule`) in one atomic
 * step. Embedded as a string because tsc does not copy `.lua` files into dist/.
 *
 * KEYS[1] the plan (string "epochs:blocksPerEpoch"), KEYS[2] the next
 * never-claimed item, KEYS[3] the claims (hash item → worker id), KEYS[4] the
 * worker lease key of an empty id (a holder's lease key is it with the id
 * appended: every key shares the cluster's hash tag).
 * ARGV[1] the claiming worker, ARGV[2] its plan, ARGV[3] the items in the
 * plan, ARGV[4] its floor.
 *
 * Returns {'item', n, handedOut}, {'wait'}, {'finished'} or {'plan', heldPlan} when the
 * claim's plan differs from the queue's.
 */
export const CLAIM_WORK_4 = {
  name: 'tesseraClaimWork',
  numberOfKeys: 4,
  lua: `
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
  if (best == nil or item < best) and (holder == ARGV[1] or redis.call('EXISTS', KEYS[4] .. holder) == 0) then
    best = item
  end
end
if best ~= nil then
  redis.call('HSET', KEYS[3], best, ARGV[1])
  return {'item', best, math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[4]))}
end
local nextItem = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[4]))
if nextItem < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], nextItem + 1)
  redis.call('HSET', KEYS[3], nextItem, ARGV[1])
  return {'item', nextItem, nextItem + 1}
end
redis.call('SET', KEYS[2], nextItem)
if #claims > 0 then return {'wait'} end
return {'finished'}
`,
} as const;
