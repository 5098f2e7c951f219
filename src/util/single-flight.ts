/**
 * Concurrent calls for the same key share one piece of work: the first call starts it, every
 * call made while it runs gets the same promise (its value, or its rejection), and once it
 * settles the key is forgotten, so the next call starts afresh. Nothing is cached.
 *
 * Keys are held in memory only, but they are still never a secret: callers pass a digest.
 */
export class SingleFlight<V> {
  private readonly flights = new Map<string, Promise<V>>()

  /** Work for keys that have a call in flight now. */
  get size(): number {
    return this.flights.size
  }

  run(key: string, work: () => Promise<V>): Promise<V> {
    const running = this.flights.get(key)
    if (running !== undefined) return running
    const flight = work()
    this.flights.set(key, flight)
    const forget = (): void => {
      if (this.flights.get(key) === flight) this.flights.delete(key)
    }
    flight.then(forget, forget)
    return flight
  }
}
