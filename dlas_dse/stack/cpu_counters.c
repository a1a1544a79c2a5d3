/* CPU counters of a board, read on the board: a TVM FFI function that a measurement calls through
 * the RPC session around each timed window (dlas_dse/stack/measurement.py says what they mean).
 *
 *   dlas_cpu_counter(which) -> int64
 *     0: busy clock ticks of all cores (user nice system irq softirq of /proc/stat's cpu line)
 *     1: stolen clock ticks of all cores
 *     2: clock ticks this process (the RPC session that runs the kernels) has used (utime + stime)
 *     3: clock ticks per second
 *     4: a monotonic clock in nanoseconds
 *
 * Self-contained C (no TVM headers): the arguments and result follow the TVM FFI's C ABI, a
 * 16-byte value of which the first 4 bytes are a type index (1: an integer) and the last 8 the value.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int32_t type_index;
  uint32_t zero_padding;
  int64_t v_int64;
} FFIValue;

enum { FFI_INT = 1 };

static int64_t proc_stat_ticks(int steal) {
  unsigned long long t[8] = {0};
  FILE* file = fopen("/proc/stat", "r");
  if (!file) return -1;
  int read = fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &t[0], &t[1], &t[2], &t[3], &t[4],
                    &t[5], &t[6], &t[7]);
  fclose(file);
  if (read < 7) return -1;
  return steal ? (int64_t)t[7] : (int64_t)(t[0] + t[1] + t[2] + t[5] + t[6]);
}

static int64_t own_ticks(void) {
  char text[4096];
  FILE* file = fopen("/proc/self/stat", "r");
  if (!file) return -1;
  size_t length = fread(text, 1, sizeof(text) - 1, file);
  fclose(file);
  text[length] = 0;
  char* field = strrchr(text, ')'); /* the command name may hold spaces: fields count from its end */
  if (!field) return -1;
  unsigned long long utime = 0, stime = 0;
  /* after ") ": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
  if (sscanf(field + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return -1;
  return (int64_t)(utime + stime);
}

static int64_t monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

#ifdef __cplusplus
extern "C" /* TVM's create_shared compiles with g++ */
#endif
__attribute__((visibility("default"))) int __tvm_ffi_dlas_cpu_counter(void* self, const FFIValue* args,
                                                                       int32_t num_args, FFIValue* result) {
  (void)self;
  int64_t value = -1; /* an unknown request answers -1 */
  switch (num_args == 1 && args[0].type_index == FFI_INT ? args[0].v_int64 : -1) {
    case 0: value = proc_stat_ticks(0); break;
    case 1: value = proc_stat_ticks(1); break;
    case 2: value = own_ticks(); break;
    case 3: value = sysconf(_SC_CLK_TCK); break;
    case 4: value = monotonic_ns(); break;
    default: break;
  }
  result->type_index = FFI_INT;
  result->zero_padding = 0;
  result->v_int64 = value;
  return 0;
}
