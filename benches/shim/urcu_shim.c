/*
 * Benchmark shim around liburcu's "memb" flavour (sys_membarrier based
 * userspace RCU), used as a peer by the rcu-offload benchmarks.
 *
 * This file is original code written for rcu-offload; it only *calls*
 * liburcu's public API.  `_LGPL_SOURCE` is defined so that liburcu's
 * public headers provide the read-side primitives as static inline
 * functions: the timed loops below then contain exactly what a C program
 * using liburcu would execute, with no call into the shared library per
 * iteration.
 *
 * Every timed loop runs entirely in C and measures itself with
 * clock_gettime(CLOCK_MONOTONIC), so no Rust<->C call cost is charged to
 * liburcu.
 */
#define _GNU_SOURCE
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Timing                                                             */
/* ------------------------------------------------------------------ */

static inline uint64_t shim_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Thread registration                                                */
/*                                                                    */
/* Registration is reference counted per thread so that nested        */
/* register/unregister pairs are harmless (liburcu itself must not be */
/* registered twice).  A pthread key destructor unregisters a thread  */
/* that exits while still registered, so liburcu's registry never     */
/* keeps a pointer into a dead thread's TLS.                          */
/* ------------------------------------------------------------------ */

static __thread unsigned long shim_registration_depth;
static pthread_key_t shim_exit_key;
static pthread_once_t shim_exit_key_once = PTHREAD_ONCE_INIT;
static int shim_exit_key_error;

static void shim_exit_destructor(void *arg)
{
	(void)arg;
	if (shim_registration_depth != 0) {
		shim_registration_depth = 0;
		urcu_memb_unregister_thread();
	}
}

static void shim_exit_key_init(void)
{
	shim_exit_key_error = pthread_key_create(&shim_exit_key, shim_exit_destructor);
}

/*
 * Registers the calling thread as a liburcu-memb reader (or bumps the
 * registration count if it already is).  Returns 0 or an errno value.
 */
int shim_memb_register_thread(void)
{
	int err;

	if (shim_registration_depth != 0) {
		shim_registration_depth++;
		return 0;
	}
	err = pthread_once(&shim_exit_key_once, shim_exit_key_init);
	if (err != 0)
		return err;
	if (shim_exit_key_error != 0)
		return shim_exit_key_error;
	/* Any non-NULL value makes the destructor run at thread exit. */
	err = pthread_setspecific(shim_exit_key, &shim_registration_depth);
	if (err != 0)
		return err;
	urcu_memb_register_thread();
	shim_registration_depth = 1;
	return 0;
}

/*
 * Drops one registration of the calling thread; the last one unregisters
 * it from liburcu.  Calling it on an unregistered thread does nothing.
 */
void shim_memb_unregister_thread(void)
{
	if (shim_registration_depth == 0)
		return;
	if (--shim_registration_depth == 0) {
		urcu_memb_unregister_thread();
		(void)pthread_setspecific(shim_exit_key, NULL);
	}
}

/* Whether the calling thread is currently registered (non-zero) or not. */
int shim_memb_thread_registered(void)
{
	return shim_registration_depth != 0;
}

/*
 * Non-zero when liburcu-memb uses sys_membarrier (read side = compiler
 * barriers only); zero when it fell back to full memory barriers on the
 * read side because the kernel refused membarrier.
 */
int shim_memb_has_sys_membarrier(void)
{
	urcu_memb_init(); /* idempotent; normally already run as a constructor */
	return urcu_memb_has_sys_membarrier != 0;
}

/* ------------------------------------------------------------------ */
/* Read side                                                          */
/* ------------------------------------------------------------------ */

/*
 * `iters` outermost read-side critical sections (lock + unlock) back to
 * back.  The calling thread must be registered and must not be inside a
 * read-side critical section.  Returns the elapsed time in nanoseconds.
 *
 * The loop cannot be deleted by the compiler: lock and unlock store to the
 * thread's reader counter through volatile accesses and contain compiler
 * barriers (asm volatile with a "memory" clobber).
 */
uint64_t shim_memb_read_pair_loop(uint64_t iters)
{
	uint64_t start, end, i;

	if (shim_registration_depth == 0)
		return 0;
	start = shim_now_ns();
	for (i = 0; i < iters; i++) {
		urcu_memb_read_lock();
		urcu_memb_read_unlock();
	}
	end = shim_now_ns();
	return end - start;
}

/*
 * Same as shim_memb_read_pair_loop, but with an outer read-side critical
 * section held around the timed loop, so every timed pair is a nested one.
 */
uint64_t shim_memb_nested_pair_loop(uint64_t iters)
{
	uint64_t start, end, i;

	if (shim_registration_depth == 0)
		return 0;
	urcu_memb_read_lock();
	start = shim_now_ns();
	for (i = 0; i < iters; i++) {
		urcu_memb_read_lock();
		urcu_memb_read_unlock();
	}
	end = shim_now_ns();
	urcu_memb_read_unlock();
	return end - start;
}

/* ------------------------------------------------------------------ */
/* Update side                                                        */
/* ------------------------------------------------------------------ */

/*
 * `iters` back-to-back grace periods.  The caller must not be inside a
 * read-side critical section (it need not be registered).  Returns the
 * elapsed time in nanoseconds.
 */
uint64_t shim_memb_synchronize_loop(uint64_t iters)
{
	uint64_t start, end, i;

	start = shim_now_ns();
	for (i = 0; i < iters; i++)
		urcu_memb_synchronize_rcu();
	end = shim_now_ns();
	return end - start;
}

/* ------------------------------------------------------------------ */
/* Background reader thread                                           */
/* ------------------------------------------------------------------ */

static pthread_mutex_t shim_reader_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_t shim_reader_thread;
static int shim_reader_running;        /* protected by shim_reader_mutex */
static int shim_reader_stop_flag;      /* __atomic accesses */
static uint64_t shim_reader_iterations; /* written by the reader before exit */
static volatile uint64_t shim_reader_sink; /* keeps the reader's loads alive */

static uint64_t shim_shared_value = 42;
static uint64_t *shim_shared_ptr = &shim_shared_value;

static void *shim_reader_main(void *arg)
{
	uint64_t n = 0, sum = 0;

	(void)arg;
	if (shim_memb_register_thread() != 0)
		return NULL;
	while (!__atomic_load_n(&shim_reader_stop_flag, __ATOMIC_RELAXED)) {
		uint64_t *p;

		urcu_memb_read_lock();
		p = rcu_dereference(shim_shared_ptr);
		sum += *p;
		urcu_memb_read_unlock();
		n++;
	}
	shim_memb_unregister_thread();
	shim_reader_iterations = n;
	shim_reader_sink = sum;
	return NULL;
}

/*
 * Starts the background reader thread: it registers with liburcu-memb and
 * loops short read-side critical sections (lock; load a shared pointer and
 * the value it points to; unlock) until shim_memb_reader_stop().
 * Returns 0, EBUSY if a reader is already running, or a pthread error.
 */
int shim_memb_reader_start(void)
{
	int err;

	pthread_mutex_lock(&shim_reader_mutex);
	if (shim_reader_running) {
		pthread_mutex_unlock(&shim_reader_mutex);
		return EBUSY;
	}
	__atomic_store_n(&shim_reader_stop_flag, 0, __ATOMIC_RELAXED);
	err = pthread_create(&shim_reader_thread, NULL, shim_reader_main, NULL);
	if (err == 0)
		shim_reader_running = 1;
	pthread_mutex_unlock(&shim_reader_mutex);
	return err;
}

/*
 * Stops and joins the background reader thread.  Returns the number of
 * read-side critical sections it executed (0 if none was running).
 */
uint64_t shim_memb_reader_stop(void)
{
	uint64_t n = 0;

	pthread_mutex_lock(&shim_reader_mutex);
	if (shim_reader_running) {
		__atomic_store_n(&shim_reader_stop_flag, 1, __ATOMIC_RELAXED);
		pthread_join(shim_reader_thread, NULL);
		shim_reader_running = 0;
		n = shim_reader_iterations;
	}
	pthread_mutex_unlock(&shim_reader_mutex);
	return n;
}

/* ------------------------------------------------------------------ */
/* call_rcu                                                           */
/*                                                                    */
/* The callback benchmarks queue callbacks with urcu_memb_call_rcu()  */
/* and wait for them with urcu_memb_barrier() (liburcu's             */
/* rcu_barrier()).  Which call_rcu worker thread a callback goes to   */
/* is process-wide liburcu state: with no per-CPU call_rcu_data, all  */
/* callbacks go to the default call_rcu thread; after                 */
/* urcu_memb_create_all_cpu_call_rcu_data() they go to the worker of  */
/* the CPU the caller runs on (a thread pinned to that CPU).          */
/* shim_memb_call_rcu_set_percpu() switches between the two; no       */
/* per-thread call_rcu_data is ever set.                              */
/*                                                                    */
/* One mutex serialises the runs below and the switch, so the         */
/* completion counter of one run only counts that run's callbacks.    */
/* ------------------------------------------------------------------ */

#define SHIM_CB_COUNTER 0 /* the callback bumps a shared counter */
#define SHIM_CB_FREE64 1  /* the callback frees a 64-byte object */
#define SHIM_MAX_PRODUCERS 64

/* A 64-byte heap object with its rcu_head inside, as C code embeds it. */
struct shim_obj64 {
	struct rcu_head head;
	uint64_t payload[6];
};
_Static_assert(sizeof(struct shim_obj64) == 64, "shim_obj64 must be 64 bytes");

static pthread_mutex_t shim_call_rcu_mutex = PTHREAD_MUTEX_INITIALIZER;
static int shim_percpu_active;  /* protected by shim_call_rcu_mutex */
static uint64_t shim_cb_counter; /* __atomic accesses */

static void shim_cb_count(struct rcu_head *head)
{
	(void)head;
	__atomic_fetch_add(&shim_cb_counter, 1, __ATOMIC_RELAXED);
}

static void shim_cb_free64(struct rcu_head *head)
{
	free(caa_container_of(head, struct shim_obj64, head));
}

/*
 * enable != 0: create one call_rcu worker per CPU (liburcu's
 * create_all_cpu_call_rcu_data), so that call_rcu() hands callbacks to the
 * worker of the caller's CPU.  enable == 0: tear the per-CPU workers down
 * again (free_all_cpu_call_rcu_data; callbacks they still held move to the
 * default worker), so that call_rcu() uses the default worker.
 * Returns 0 or an errno value.  Must not be called inside a read-side
 * critical section (tearing down waits for a grace period).
 */
int shim_memb_call_rcu_set_percpu(int enable)
{
	int ret = 0;

	pthread_mutex_lock(&shim_call_rcu_mutex);
	if (enable && !shim_percpu_active) {
		ret = urcu_memb_create_all_cpu_call_rcu_data(0);
		if (ret == 0) {
			shim_percpu_active = 1;
		} else {
			ret = ret < 0 ? -ret : ret;
			/* Undo a partial setup. */
			urcu_memb_free_all_cpu_call_rcu_data();
		}
	} else if (!enable && shim_percpu_active) {
		urcu_memb_free_all_cpu_call_rcu_data();
		shim_percpu_active = 0;
	}
	pthread_mutex_unlock(&shim_call_rcu_mutex);
	return ret;
}

/* Start gate: helpers check in, then wait until the coordinator opens it. */
struct shim_gate {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	unsigned ready;
	int open;
};

/* One producer: its callbacks' memory, prepared before the timed part. */
struct shim_producer {
	pthread_t thread;
	int kind;
	uint64_t count;
	struct rcu_head *heads;    /* SHIM_CB_COUNTER: count rcu_heads */
	struct shim_obj64 **objs;  /* SHIM_CB_FREE64: count objects */
	int err;
	int queued;
	uint64_t start_ns, end_ns; /* the producer's own loop */
	struct shim_gate *gate;
};

static int shim_producer_prepare(struct shim_producer *p)
{
	uint64_t i;

	if (p->count > SIZE_MAX / sizeof(struct shim_obj64))
		return ENOMEM;
	if (p->kind == SHIM_CB_COUNTER) {
		p->heads = malloc((p->count ? p->count : 1) * sizeof(*p->heads));
		if (!p->heads)
			return ENOMEM;
		/* Touch every page now, so no page fault lands in the timed loop. */
		memset(p->heads, 0, (p->count ? p->count : 1) * sizeof(*p->heads));
		return 0;
	}
	p->objs = calloc(p->count ? p->count : 1, sizeof(*p->objs));
	if (!p->objs)
		return ENOMEM;
	for (i = 0; i < p->count; i++) {
		p->objs[i] = malloc(sizeof(struct shim_obj64));
		if (!p->objs[i])
			return ENOMEM; /* shim_producer_release frees the rest */
		p->objs[i]->payload[0] = i;
	}
	return 0;
}

/* The timed loop: one call_rcu() per callback, nothing else. */
static void shim_producer_queue(struct shim_producer *p)
{
	uint64_t i, n = p->count;

	p->start_ns = shim_now_ns();
	if (p->kind == SHIM_CB_COUNTER) {
		for (i = 0; i < n; i++)
			urcu_memb_call_rcu(&p->heads[i], shim_cb_count);
	} else {
		for (i = 0; i < n; i++)
			urcu_memb_call_rcu(&p->objs[i]->head, shim_cb_free64);
	}
	p->end_ns = shim_now_ns();
	p->queued = 1;
}

/* After urcu_memb_barrier(): queued objects were freed by their callbacks. */
static void shim_producer_release(struct shim_producer *p)
{
	uint64_t i;

	free(p->heads);
	if (p->objs) {
		if (!p->queued)
			for (i = 0; i < p->count; i++)
				free(p->objs[i]); /* free(NULL) is fine */
		free(p->objs);
	}
	p->heads = NULL;
	p->objs = NULL;
}

static void shim_gate_init(struct shim_gate *g)
{
	pthread_mutex_init(&g->mutex, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->ready = 0;
	g->open = 0;
}

static void shim_gate_destroy(struct shim_gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->mutex);
}

static void shim_gate_wait(struct shim_gate *g)
{
	pthread_mutex_lock(&g->mutex);
	g->ready++;
	pthread_cond_broadcast(&g->cond);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->mutex);
	pthread_mutex_unlock(&g->mutex);
}

/* Waits until `helpers` helpers checked in, then lets everyone go. */
static void shim_gate_open(struct shim_gate *g, unsigned helpers)
{
	pthread_mutex_lock(&g->mutex);
	while (g->ready < helpers)
		pthread_cond_wait(&g->cond, &g->mutex);
	g->open = 1;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mutex);
}

static void *shim_producer_main(void *arg)
{
	struct shim_producer *p = arg;

	p->err = shim_memb_register_thread(); /* call_rcu needs a registered thread */
	if (p->err == 0)
		p->err = shim_producer_prepare(p);
	shim_gate_wait(p->gate);
	if (p->err == 0)
		shim_producer_queue(p);
	shim_memb_unregister_thread();
	return NULL;
}

/*
 * Queues `total` callbacks of `kind` from `producers` threads (the calling
 * thread plus producers - 1 helper pthreads, each with an equal share),
 * then calls urcu_memb_barrier().  Each producer allocates its callbacks'
 * memory (rcu_heads, or malloc(64) objects) before the start gate, so only
 * call_rcu() is inside the timed loops.
 *
 * *end_to_end_ns: from the calling thread passing the start gate until
 * urcu_memb_barrier() returned (every callback has run).
 * *mean_loop_ns: the mean over producers of each producer's own queueing
 * loop (clock read before and after its call_rcu() loop).
 *
 * For SHIM_CB_COUNTER, checks that exactly `total` callbacks ran (EIO if
 * not).  Returns 0 or an errno value.  The caller must not be inside a
 * read-side critical section.
 */
int shim_memb_call_rcu_run(int kind, unsigned producers, uint64_t total,
			   uint64_t *end_to_end_ns, uint64_t *mean_loop_ns)
{
	struct shim_producer p[SHIM_MAX_PRODUCERS];
	struct shim_gate gate;
	unsigned i, started = 0;
	uint64_t t0, t1, before, after, queued = 0, loops = 0;
	int err = 0;

	if (producers == 0 || producers > SHIM_MAX_PRODUCERS ||
	    (kind != SHIM_CB_COUNTER && kind != SHIM_CB_FREE64) ||
	    !end_to_end_ns || !mean_loop_ns)
		return EINVAL;

	pthread_mutex_lock(&shim_call_rcu_mutex);
	err = shim_memb_register_thread();
	if (err != 0) {
		pthread_mutex_unlock(&shim_call_rcu_mutex);
		return err;
	}
	memset(p, 0, sizeof(p));
	shim_gate_init(&gate);
	for (i = 0; i < producers; i++) {
		p[i].kind = kind;
		p[i].count = total / producers + (i < total % producers ? 1 : 0);
		p[i].gate = &gate;
	}
	before = __atomic_load_n(&shim_cb_counter, __ATOMIC_RELAXED);

	for (i = 1; i < producers; i++) {
		err = pthread_create(&p[i].thread, NULL, shim_producer_main, &p[i]);
		if (err != 0)
			break;
		started++;
	}
	if (err == 0)
		err = shim_producer_prepare(&p[0]);
	p[0].err = err;

	shim_gate_open(&gate, started);
	t0 = shim_now_ns();
	if (p[0].err == 0)
		shim_producer_queue(&p[0]);
	for (i = 1; i <= started; i++)
		pthread_join(p[i].thread, NULL);
	urcu_memb_barrier();
	t1 = shim_now_ns();

	for (i = 0; i <= started && i < producers; i++) {
		if (p[i].err != 0 && err == 0)
			err = p[i].err;
		if (p[i].queued) {
			queued += p[i].count;
			loops += p[i].end_ns - p[i].start_ns;
		}
		shim_producer_release(&p[i]);
	}
	after = __atomic_load_n(&shim_cb_counter, __ATOMIC_RELAXED);
	if (err == 0 && kind == SHIM_CB_COUNTER && after - before != queued)
		err = EIO;

	shim_gate_destroy(&gate);
	shim_memb_unregister_thread();
	pthread_mutex_unlock(&shim_call_rcu_mutex);

	*end_to_end_ns = t1 - t0;
	*mean_loop_ns = loops / producers;
	return err;
}

/* A latency probe: when it was queued and when its callback ran. */
struct shim_lat_node {
	struct rcu_head head;
	uint64_t call_ns;
	uint64_t run_ns; /* __atomic accesses */
};

static void shim_cb_latency(struct rcu_head *head)
{
	struct shim_lat_node *node = caa_container_of(head, struct shim_lat_node, head);

	__atomic_store_n(&node->run_ns, shim_now_ns(), __ATOMIC_RELAXED);
}

static void shim_sleep_until(uint64_t deadline_ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(deadline_ns / UINT64_C(1000000000));
	ts.tv_nsec = (long)(deadline_ns % UINT64_C(1000000000));
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/*
 * Light load: the calling thread queues `n` callbacks, one every
 * `interval_ns` (sleeping in between, against absolute deadlines), each
 * recording clock_gettime() when it runs; then urcu_memb_barrier().
 * latencies_ns[i] = run time - time just before call_rcu() of callback i.
 * Returns 0 or an errno value.  The caller must not be inside a read-side
 * critical section.
 */
int shim_memb_call_rcu_latency(uint64_t n, uint64_t interval_ns, uint64_t *latencies_ns)
{
	struct shim_lat_node *nodes;
	uint64_t i, next;
	int err;

	if (n == 0)
		return 0;
	if (!latencies_ns)
		return EINVAL;
	if (n > SIZE_MAX / sizeof(*nodes))
		return ENOMEM;
	nodes = malloc(n * sizeof(*nodes));
	if (!nodes)
		return ENOMEM;
	memset(nodes, 0, n * sizeof(*nodes)); /* fault the pages in up front */
	pthread_mutex_lock(&shim_call_rcu_mutex);
	err = shim_memb_register_thread();
	if (err != 0) {
		pthread_mutex_unlock(&shim_call_rcu_mutex);
		free(nodes);
		return err;
	}
	next = shim_now_ns();
	for (i = 0; i < n; i++) {
		next += interval_ns;
		shim_sleep_until(next);
		nodes[i].call_ns = shim_now_ns();
		urcu_memb_call_rcu(&nodes[i].head, shim_cb_latency);
	}
	urcu_memb_barrier();
	for (i = 0; i < n; i++)
		latencies_ns[i] = __atomic_load_n(&nodes[i].run_ns, __ATOMIC_RELAXED) - nodes[i].call_ns;
	shim_memb_unregister_thread();
	pthread_mutex_unlock(&shim_call_rcu_mutex);
	free(nodes);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Flood: slow callbacks queued as fast as possible                   */
/*                                                                    */
/* Producers loop { malloc(64); call_rcu() } until a stop flag is     */
/* raised (by the coordinator at the deadline, or by the Rust side's  */
/* memory-cap sampler); each callback spins `steps` steps, then frees */
/* its object.  Nothing bounds liburcu's queues: while producers      */
/* outpace the callbacks, memory grows.                               */
/* ------------------------------------------------------------------ */

/* The spin of a flood callback: `steps` additions, each forced through
 * memory by an empty asm that takes the accumulator's address with a
 * memory clobber (what Rust's std::hint::black_box does to an integer). */
static __attribute__((noinline)) uint64_t shim_spin(uint64_t steps)
{
	uint64_t acc = 0, i;

	for (i = 0; i < steps; i++) {
		acc += i;
		__asm__ volatile("" : : "r"(&acc) : "memory");
	}
	return acc;
}

static uint64_t shim_flood_steps; /* __atomic accesses; set before a run */

/* The flood callback's body: spin, then free the object. */
static inline void shim_flood_body(struct shim_obj64 *obj)
{
	obj->payload[1] = shim_spin(__atomic_load_n(&shim_flood_steps, __ATOMIC_RELAXED));
	free(obj);
}

static void shim_cb_flood(struct rcu_head *head)
{
	shim_flood_body(caa_container_of(head, struct shim_obj64, head));
}

/*
 * Fills objs[0..n) with malloc(64) objects (for shim_flood_body_loop).
 * Returns 0, or ENOMEM after freeing what it allocated.
 */
int shim_flood_alloc(void **objs, uint64_t n)
{
	uint64_t i, j;

	for (i = 0; i < n; i++) {
		struct shim_obj64 *obj = malloc(sizeof(*obj));

		if (!obj) {
			for (j = 0; j < i; j++)
				free(objs[j]);
			return ENOMEM;
		}
		obj->payload[0] = i;
		objs[i] = obj;
	}
	return 0;
}

/*
 * Runs the flood callback's body (spin `steps`, free) on each of
 * objs[0..n), which must come from shim_flood_alloc and are freed.
 */
void shim_flood_body_loop(void **objs, uint64_t n, uint64_t steps)
{
	uint64_t i;

	__atomic_store_n(&shim_flood_steps, steps, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++)
		shim_flood_body(objs[i]);
}

struct shim_flooder {
	pthread_t thread;
	const int *stop;
	struct shim_gate *gate;
	uint64_t queued;
	int err;
};

static void *shim_flooder_main(void *arg)
{
	struct shim_flooder *f = arg;
	uint64_t n = 0;

	f->err = shim_memb_register_thread(); /* call_rcu needs a registered thread */
	shim_gate_wait(f->gate);
	if (f->err == 0) {
		while (!__atomic_load_n(f->stop, __ATOMIC_RELAXED)) {
			struct shim_obj64 *obj = malloc(sizeof(*obj));

			if (!obj) {
				f->err = ENOMEM;
				break;
			}
			obj->payload[0] = n++;
			urcu_memb_call_rcu(&obj->head, shim_cb_flood);
		}
	}
	f->queued = n;
	shim_memb_unregister_thread();
	return NULL;
}

/*
 * Flood: `producers` pthreads loop { malloc(64); call_rcu(spin `steps`,
 * free) } from the start gate until *stop becomes non-zero; the calling
 * thread raises it `duration_ns` after the gate opened (unless someone else
 * did first), joins the producers, then calls urcu_memb_barrier().
 *
 * *queued: callbacks queued (all have run on return).
 * *produce_ns: from the gate opening until the producers were joined.
 * *total_ns: from the gate opening until urcu_memb_barrier() returned.
 * Returns 0 or an errno value.  The caller must not be inside a read-side
 * critical section; which call_rcu workers run the callbacks is whatever
 * shim_memb_call_rcu_set_percpu() last chose.
 */
int shim_memb_flood(unsigned producers, uint64_t duration_ns, uint64_t steps, int *stop,
		    uint64_t *queued, uint64_t *produce_ns, uint64_t *total_ns)
{
	struct shim_flooder f[SHIM_MAX_PRODUCERS];
	struct shim_gate gate;
	unsigned i, started = 0;
	uint64_t t0, t1, t2, deadline, n = 0;
	int err = 0;

	if (producers == 0 || producers > SHIM_MAX_PRODUCERS || !stop || !queued ||
	    !produce_ns || !total_ns)
		return EINVAL;
	pthread_mutex_lock(&shim_call_rcu_mutex);
	__atomic_store_n(&shim_flood_steps, steps, __ATOMIC_RELAXED);
	memset(f, 0, sizeof(f));
	shim_gate_init(&gate);
	for (i = 0; i < producers; i++) {
		f[i].stop = stop;
		f[i].gate = &gate;
		err = pthread_create(&f[i].thread, NULL, shim_flooder_main, &f[i]);
		if (err != 0)
			break;
		started++;
	}
	if (err != 0)
		__atomic_store_n(stop, 1, __ATOMIC_RELAXED);
	shim_gate_open(&gate, started);
	t0 = shim_now_ns();
	deadline = t0 + duration_ns;
	/* Sleep in slices of at most 1 ms, so a raised stop flag is seen soon. */
	while (!__atomic_load_n(stop, __ATOMIC_RELAXED)) {
		uint64_t now = shim_now_ns();

		if (now >= deadline)
			break;
		shim_sleep_until(now + (deadline - now < 1000000 ? deadline - now : 1000000));
	}
	__atomic_store_n(stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < started; i++) {
		pthread_join(f[i].thread, NULL);
		n += f[i].queued;
		if (f[i].err != 0 && err == 0)
			err = f[i].err;
	}
	t1 = shim_now_ns();
	urcu_memb_barrier();
	t2 = shim_now_ns();
	shim_gate_destroy(&gate);
	pthread_mutex_unlock(&shim_call_rcu_mutex);
	*queued = n;
	*produce_ns = t1 - t0;
	*total_ns = t2 - t0;
	return err;
}
