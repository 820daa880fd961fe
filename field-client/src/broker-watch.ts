import { TIMINGS } from '../../shared/limits.ts';
import type { FieldClientOptions } from './client-options.ts';
import type { GatewayConnection } from './gateway-connection.ts';

/** How long the gateway has answered GATEWAY_BROKER_UNAVAILABLE without taking anything, and when to leave it. */
export class BrokerWatch {
  /** the first GATEWAY_BROKER_UNAVAILABLE since the gateway last took something on this connection
   * (performance.now(): the device's clock set back would otherwise keep it on a server whose broker
   * is down for as long as the step) */
  private brokerDownSince: number | undefined;

  constructor(
    private readonly options: Pick<FieldClientOptions, 'brokerUnavailableMoveMs'>,
    private readonly connection: GatewayConnection,
  ) {}

  /** A new connection, or the gateway took something: the broker is not down (as far as is known). */
  reset(): void {
    this.brokerDownSince = undefined;
  }

  /**
   * Whether the gateway's broker has been unavailable long enough to leave for the next URL (and
   * left): its DMZ server's Mosquitto down behind a gateway and a Caddy that are up, which a
   * health check in front of the servers does not see (HAProxy's reaches Caddy only). With one
   * URL, four times as long: behind a load balancer the next connection may reach another server,
   * and a lone server whose broker is down gets a handshake from each device every few minutes only.
   */
  brokerGone(): boolean {
    const now = performance.now();
    this.brokerDownSince ??= now;
    const forMs = now - this.brokerDownSince;
    const moveMs = this.options.brokerUnavailableMoveMs ?? TIMINGS.fieldBrokerUnavailableMoveMs;
    if (forMs < (this.connection.urlCount > 1 ? moveMs : 4 * moveMs)) return false;
    return this.connection.moveOn({ code: 'FIELD_GATEWAY_BROKER_DOWN', forMs }, "the gateway's broker has been unavailable too long; connecting again (the next gateway URL, if several)");
  }
}
