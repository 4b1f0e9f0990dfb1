import { MemoryMembershipStore } from '../../../cluster/membership/memory-store.js';
import { describeStoreContract } from '../../helpers/store-contract.js';

// The embedded store is one object per process: a "peer" is the same store.
describeStoreContract('embedded (memory)', async () => {
  const store = new MemoryMembershipStore();
  return { store, cluster: 'test', peer: () => store, close: () => store.close() };
});
