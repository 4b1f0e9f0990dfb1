import { setLogLevel } from '../../cluster/log.js';

/** Root hooks: tests log warnings and errors only. */
export const mochaHooks = {
  beforeAll(): void {
    setLogLevel('warn');
  },
};
