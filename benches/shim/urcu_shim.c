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
