// A TCP proxy in front of a server whose connections the test can cut at once (a dropped
// network path): new connections are accepted again right after.

import * as net from "node:net";

export class CuttableProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  cuts = 0;

  constructor(private readonly upstreamPort: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.upstreamPort, "127.0.0.1");
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => { client.destroy(); upstream.destroy(); });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  listen(): Promise<this> {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => {
      this.port = (this.server.address() as net.AddressInfo).port;
      resolve(this);
    }));
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Destroy every open connection, both sides. */
  cut(): void {
    this.cuts += 1;
    for (const socket of this.sockets) socket.destroy();
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
