import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

type Handler<Req extends IncomingMessage, Res extends ServerResponse> = (req: Req, res: Res) => void;

/**
 * `handle`, run for one request of a connection at a time: a request pipelined behind another
 * (HTTP/1.1 lets a client send its requests without waiting for the answers, which come in order)
 * waits for the answer before it to be written whole. Node parses every request of what it read at
 * once (64 KiB: a thousand requests and more) and runs each as it is parsed; it stops reading only
 * once answers are waiting to be written, and an answer made by an asynchronous handler is not
 * waiting yet. So a client that pipelined requests and read nothing had a thousand answers made for
 * it, each held until written: a thousand device lists or metrics pages, gigabytes. In turn, an
 * answer its client does not read holds back the ones after it, as Node would anyway.
 *
 * At most `maxWaiting` requests of a connection wait their turn before it is read no further (Node
 * reads on once they are fewer; what it had read already is parsed all the same). Browsers never
 * pipeline; a client that does gets its answers as ever.
 */
export function oneRequestAtATime<Req extends IncomingMessage, Res extends ServerResponse>(handle: Handler<Req, Res>, maxWaiting: number): Handler<Req, Res> {
  const lines = new WeakMap<Socket, Array<[Req, Res]>>();
  return (req, res) => {
    const socket = req.socket;
    const line = lines.get(socket);
    if (line) {
      line.push([req, res]);
      if (line.length >= maxWaiting) socket.pause();
      return;
    }
    const waiting: Array<[Req, Res]> = [];
    lines.set(socket, waiting);
    const run = (q: Req, s: Res): void => {
      // 'close': the answer is written whole, or the connection gone (its requests with it).
      s.once('close', () => {
        const next = socket.destroyed ? undefined : waiting.shift();
        if (next === undefined) {
          lines.delete(socket);
          return;
        }
        if (waiting.length < maxWaiting && socket.isPaused()) socket.resume();
        run(...next);
      });
      handle(q, s);
    };
    run(req, res);
  };
}
