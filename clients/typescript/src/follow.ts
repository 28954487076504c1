// Follow a server stream of sequenced events to its terminal event, reopening it from the next
// sequence number when it drops: no event is repeated or skipped. Shared by the agent's
// StreamProgress and the hub's move / copy log streams: each says how to open the stream from a
// sequence number and how to read one message.

import * as grpc from "@grpc/grpc-js";

import { BucketsError } from "./errors";
import { sleep } from "./connection";

/** What one message of a followed stream is. */
export type Reading<Event> =
  | { kind: "event"; event: Event; seq: bigint; terminal: boolean }
  /** The state of what is followed (sent first): `finished` and its last sequence number. */
  | { kind: "state"; finished: boolean; lastSeq: bigint }
  | { kind: "keepalive" };

export interface FollowSpec<Update, Event> {
  /** Open the stream from `fromSeq` (its events with seq >= fromSeq). */
  open(fromSeq: bigint): grpc.ClientReadableStream<Update>;
  read(update: Update): Reading<Event>;
  /** A stream with no message this long is reopened. */
  idleTimeoutMs: number;
  /** Consecutive failed reopenings before giving up (the last failure is thrown). */
  reconnectAttempts: number;
  backoffMs(failures: number): number;
  /** For messages: "progress of operation X". */
  what: string;
  /** Told of each reopening (tests, logs). */
  onReconnect?(fromSeq: bigint, reason: string): void;
  /**
   * Asked when a stream ends without error (and without a skipped seq or silence): whether the
   * follow is over. Absent: over when the stream's state message said finished and no event is
   * left (state.lastSeq < the next seq). A stream whose events are never `terminal` (the hub's
   * logs, which may carry entries after the ending one) ends the follow only through this.
   */
  ended?(): boolean;
}

/** Codes on which a stream is reopened (besides the idle timeout). */
export const RECONNECT_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED,
]);

/**
 * Yield the events with seq >= `fromSeq` in order until the terminal one (or a stream end that
 * `spec.ended` accepts). A stream that drops
 * (UNAVAILABLE, DEADLINE_EXCEEDED), stays silent for `idleTimeoutMs`, ends early or jumps over a
 * sequence number is reopened from the next one; other errors (NOT_FOUND ...) are thrown at once
 * as BucketsError. When `fromSeq` is past the terminal event of a finished stream, nothing is
 * yielded. Leaving the loop early cancels the stream.
 */
export async function* follow<Update, Event>(spec: FollowSpec<Update, Event>, fromSeq: bigint = 1n):
  AsyncGenerator<Event, void, undefined> {
  let next = fromSeq < 1n ? 1n : fromSeq;
  let failures = 0;
  for (;;) {
    const stream = spec.open(next);
    let idle = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => { idle = true; stream.cancel(); }, spec.idleTimeoutMs);
    };
    let failure = "the stream ended before the terminal event";
    let code: grpc.status = grpc.status.UNAVAILABLE;
    try {
      arm();
      let state: { finished: boolean; lastSeq: bigint } | null = null;
      let jumped = false;
      for await (const update of stream as AsyncIterable<Update>) {
        arm();
        const reading = spec.read(update);
        if (reading.kind === "state") {
          state = reading;
          continue;
        }
        if (reading.kind === "keepalive") {
          failures = 0; // the stream is alive
          continue;
        }
        if (reading.seq < next) continue; // delivered before
        if (reading.seq > next) { // never skip one: reopen from the missing seq
          failure = `the stream jumped from seq ${next} to ${reading.seq}`;
          jumped = true;
          break;
        }
        failures = 0;
        next = reading.seq + 1n;
        clearTimeout(timer); // the consumer's own time is no silence of the stream
        yield reading.event;
        if (reading.terminal) return;
        arm();
      }
      if (!jumped && !idle) {
        if (spec.ended ? spec.ended() : state !== null && state.finished && state.lastSeq < next) return;
      }
    } catch (error) {
      if (!idle) {
        const failed = BucketsError.from(error);
        if (!RECONNECT_CODES.has(failed.code)) throw failed;
        code = failed.code;
        failure = failed.message;
      }
    } finally {
      clearTimeout(timer);
      stream.cancel();
    }
    if (idle) failure = `no message for ${spec.idleTimeoutMs} ms`;
    failures += 1;
    if (failures > spec.reconnectAttempts) {
      throw new BucketsError(code, `${spec.what}: ${failure} (gave up after ${spec.reconnectAttempts} reopenings)`);
    }
    spec.onReconnect?.(next, failure);
    await sleep(spec.backoffMs(failures));
  }
}
