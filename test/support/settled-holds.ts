/**
 * `$2` committed reservations of account `$1` made by SQL, each held 5, captured 4 and released 1
 * an hour ago: the shape of a large account's settled history, for Reconcile's tests and its
 * bench (the caller adds the entries that explain them, or tampers with them).
 */
export const INSERT_SETTLED_RESERVATIONS = `
  insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount, allocations, expires_at, created_at, settled_at)
  select $1, gen_random_uuid(), 'COMMITTED', 5, 4, 1, '[]', now() - interval '1 hour', now() - interval '2 hours', now() - interval '1 hour'
    from generate_series(1, $2)`;
