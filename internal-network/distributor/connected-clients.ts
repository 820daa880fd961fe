import type { MqttClient } from 'mqtt';

/**
 * The distributor's consumer connections taken in turn, those that are up only: what it publishes
 * itself (commit receipts, clears of invented presences) does not all wait behind one connection.
 */
export class ConnectedRoundRobin {
  private next = 0;

  constructor(private readonly clients: readonly MqttClient[]) {}

  /** The next connection that is up, or undefined when none is. */
  pick(): MqttClient | undefined {
    for (let i = 0; i < this.clients.length; i++) {
      const c = this.clients[(this.next + i) % this.clients.length] as MqttClient;
      if (c.connected) {
        this.next = (this.next + i + 1) % this.clients.length;
        return c;
      }
    }
    return undefined;
  }
}
