/**
 * live-members-n: reads the leases of the ids listed in a member index and
 * removes from the index, in the same atomic step, the ids whose lease has
 * expired. Doing both in one script matters: pruning after a separate read
 * could drop an id that re-registered in between, hiding a live member.
 * Embedded as a string because tsc does not copy `.lua` files into dist/.
 *
 * A variable number of keys (hence `-n`): KEYS[1] the index, KEYS[2..] the
 * lease keys; ARGV[i] the id whose lease is KEYS[i + 1].
 *
 * Returns the lease values (MemberInfo JSON) of the live members.
 */
export const LIVE_MEMBERS_N = {
  name: 'tesseraLiveMembers',
  lua: `
local live = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    live[#live + 1] = v
  else
    redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return live
`,
} as const;
