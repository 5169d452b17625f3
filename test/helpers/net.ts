/**
 * Loopback socket helpers for the tests that send bytes through tor: a service to reach, and exact reads.
 * (No ava hooks here, unlike ./tor.ts.)
 */
import { createServer, type AddressInfo, type Socket } from 'node:net'

/** What the helpers need of an ava ExecutionContext. */
interface Teardown {
  teardown(fn: () => Promise<void>): void
}

/**
 * A server on 127.0.0.1 that writes `greeting` (if any) to each connection, then echoes every chunk back
 * reversed, so a reply proves the bytes reached it (a plain echo could be a reflection on the way). Closed when
 * the test ends; resolves with its port.
 */
export async function startReverseEchoServer(t: Teardown, greeting?: string): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    if (greeting !== undefined) socket.write(greeting)
    socket.on('data', (chunk) => socket.write(Buffer.from(chunk).reverse()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      }),
  )
  return (server.address() as AddressInfo).port
}

/** Reads exactly `n` bytes from `socket` (anything after them in the same chunk is dropped). */
export function readBytes(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk])
      if (got.length >= n) {
        socket.off('data', onData)
        socket.off('error', reject)
        resolve(got.subarray(0, n))
      }
    }
    socket.on('data', onData)
    socket.once('error', reject)
  })
}

/** Writes `text` to a socket on a reverse echo server and resolves with the reply of the same length. */
export async function roundTrip(socket: Socket, text: string): Promise<string> {
  const echoed = readBytes(socket, Buffer.byteLength(text))
  socket.write(text)
  return (await echoed).toString()
}
