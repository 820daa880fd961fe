import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';

export type CommandOutcome = Pick<ResponsePayload, 'status' | 'result'>;
export type CommandHandler = (params: unknown, frame: CommandFrame) => Promise<CommandOutcome> | CommandOutcome;

/**
 * Handlers by command name. A command without a handler is answered "rejected"; a handler that
 * throws is answered "failed" with its message. Every command gets exactly one answer.
 */
export class CommandHandlers {
  private readonly handlers = new Map<string, CommandHandler>();

  register(name: string, handler: CommandHandler): this {
    this.handlers.set(name, handler);
    return this;
  }

  async run(frame: CommandFrame): Promise<CommandOutcome> {
    const handler = this.handlers.get(frame.command);
    if (!handler) return { status: 'rejected', result: `unknown command "${frame.command}"` };
    try {
      return await handler(frame.params, frame);
    } catch (err) {
      return { status: 'failed', result: (err as Error).message };
    }
  }
}
