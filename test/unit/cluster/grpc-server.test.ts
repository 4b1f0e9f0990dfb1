import { once } from 'node:events';
import { connect } from 'node:http2';
import { expect } from 'chai';
import { type TesseraGrpcServer, startGrpcServer } from '../../../cluster/grpc-server.js';
import { FLOW_CONTROL_WINDOW_BYTES } from '../../../cluster/wire/dense-values.js';

/*
 * raiseFlowControlWindows (cluster/grpc-server.ts) reaches into grpc-js
 * internals and, by design, falls back silently to HTTP/2's 64 KiB windows if
 * they change. This test is what notices: a bare HTTP/2 client connects and
 * reads the windows the server announced.
 */
describe('cluster/grpc-server: flow-control windows', () => {
  let server: TesseraGrpcServer;
  before(async () => {
    server = await startGrpcServer('127.0.0.1:0', []);
  });
  after(async () => {
    await server.close(100);
  });

  it('announces an 8 MiB stream window and raises the connection window to 8 MiB', async () => {
    const session = connect(`http://127.0.0.1:${server.port}`);
    try {
      const [settings] = (await once(session, 'remoteSettings')) as [{ initialWindowSize?: number }];
      expect(settings.initialWindowSize, 'stream window (SETTINGS_INITIAL_WINDOW_SIZE)').to.equal(FLOW_CONTROL_WINDOW_BYTES);
      // The connection window comes as a WINDOW_UPDATE right after the settings.
      for (let i = 0; i < 100 && session.state.remoteWindowSize !== FLOW_CONTROL_WINDOW_BYTES; i++) await new Promise((r) => setTimeout(r, 5));
      expect(session.state.remoteWindowSize, 'connection window').to.equal(FLOW_CONTROL_WINDOW_BYTES);
    } finally {
      session.close();
    }
  });
});
