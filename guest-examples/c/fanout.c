/*
 * fanout DIR K PROGRAM [ARGS...] -- the C version of guest-examples/fanout
 * (same output, byte for byte):
 *
 * runs `PROGRAM ARGS... NAME` in DIR for every regular file NAME in DIR, at
 * most K at once, streaming each child's stdout as it arrives; then prints,
 * sorted by name,
 *
 *     NAME: <the child's stdout, trimmed>   (" [exited N]" / " [signaled N]" if it failed)
 *     N files, at most M at once
 *
 * If a child cannot be started: `error: <error-code>` (such as
 * `access-denied`) on stdout, the host's message on stderr, exit 1.
 *
 * A plain C `main` built as a wasi:cli command (clang-19 + wasi-libc, linked
 * by wasm-component-ld); the wasmproc:process imports come from the
 * bindings in gen/ (world wasmproc:process/guest, made by cgen/).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gen/guest.h"

typedef struct {
    char *name;
    bool has_stdout;
    wasi_io_streams_own_input_stream_t stdout_;
    char *out;
    size_t out_len;
    wasmproc_process_spawn_own_child_t child;
    bool exited;
    wasmproc_process_types_exit_status_t status;
} job_t;

typedef struct {
    char *name;
    char *line;
} result_t;

static const char *error_code_name(uint8_t tag) {
    switch (tag) {
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_ACCESS_DENIED: return "access-denied";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_NOT_FOUND: return "not-found";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_INVALID_ARGUMENT: return "invalid-argument";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_LIMIT_EXCEEDED: return "limit-exceeded";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_TIMED_OUT: return "timed-out";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_CLOSED: return "closed";
    case WASMPROC_PROCESS_TYPES_ERROR_CODE_UNSUPPORTED: return "unsupported";
    default: return "io";
    }
}

/* The message of an error-code: every case holds a string. */
static guest_string_t error_code_message(const wasmproc_process_types_error_code_t *e) {
    return e->val.io;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int by_result_name(const void *a, const void *b) {
    return strcmp(((const result_t *)a)->name, ((const result_t *)b)->name);
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fanout DIR K PROGRAM [ARGS...]\n");
        return 1;
    }
    const char *dir = argv[1];
    int k = atoi(argv[2]);
    if (k <= 0) {
        fprintf(stderr, "fanout: K must be a positive number\n");
        return 1;
    }

    /* The regular files of DIR, sorted. */
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 1;
    }
    size_t total = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *ent;
    while ((ent = readdir(d))) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (total == cap) names = realloc(names, (cap *= 2) * sizeof *names);
        names[total++] = strdup(ent->d_name);
    }
    closedir(d);
    qsort(names, total, sizeof *names, by_name);

    /* argv of each child: ARGS... NAME (the last one filled in per file). */
    size_t nargs = (size_t)argc - 4 + 1;
    guest_string_t *args = calloc(nargs, sizeof *args);
    for (size_t i = 0; i + 1 < nargs; i++) guest_string_set(&args[i], argv[4 + i]);
    guest_string_t program;
    guest_string_set(&program, argv[3]);

    job_t *running = calloc((size_t)k, sizeof *running);
    size_t nrunning = 0, next = 0, ndone = 0, most = 0;
    result_t *done = calloc(total ? total : 1, sizeof *done);
    wasi_io_poll_own_pollable_t *pollables = calloc(2 * (size_t)k, sizeof *pollables);
    wasi_io_poll_borrow_pollable_t *borrows = calloc(2 * (size_t)k, sizeof *borrows);
    size_t *src_job = calloc(2 * (size_t)k, sizeof *src_job);
    bool *src_is_stdout = calloc(2 * (size_t)k, sizeof *src_is_stdout);

    while (next < total || nrunning > 0) {
        while (nrunning < (size_t)k && next < total) {
            char *name = names[next++];
            guest_string_set(&args[nargs - 1], name);
            guest_list_string_t arglist = {args, nargs};
            wasmproc_process_spawn_spawn_options_t options = {0};
            options.cwd.is_some = true;
            guest_string_set(&options.cwd.val, dir);
            options.stdin_.tag = WASMPROC_PROCESS_TYPES_STDIO_NULL;
            options.stdout_.tag = WASMPROC_PROCESS_TYPES_STDIO_PIPED;
            options.stderr_.tag = WASMPROC_PROCESS_TYPES_STDIO_INHERIT;
            options.uid.is_some = false; // the host's child user and group
            options.gid.is_some = false;
            options.timeout_ms.is_some = false; // no deadline
            options.kill_signal.is_some = false;
            wasmproc_process_spawn_own_child_t child;
            wasmproc_process_spawn_error_code_t err;
            if (!wasmproc_process_spawn_spawn(&program, &arglist, &options, &child, &err)) {
                guest_string_t msg = error_code_message(&err);
                printf("error: %s\n", error_code_name(err.tag));
                fprintf(stderr, "fanout: spawn %s: %s: %.*s\n", argv[3], error_code_name(err.tag),
                        (int)msg.len, (const char *)msg.ptr);
                fflush(stdout);
                exit(1);
            }
            job_t *job = &running[nrunning++];
            memset(job, 0, sizeof *job);
            job->name = name;
            job->child = child;
            wasmproc_process_spawn_own_input_stream_t out;
            job->has_stdout = wasmproc_process_spawn_method_child_take_stdout(
                wasmproc_process_spawn_borrow_child(child), &out);
            job->stdout_ = out;
        }
        if (nrunning > most) most = nrunning;

        /* One poll over every open stdout and every child not yet exited. */
        size_t n = 0;
        for (size_t i = 0; i < nrunning; i++) {
            if (running[i].has_stdout) {
                pollables[n] = wasi_io_streams_method_input_stream_subscribe(
                    wasi_io_streams_borrow_input_stream(running[i].stdout_));
                src_job[n] = i;
                src_is_stdout[n++] = true;
            }
            if (!running[i].exited) {
                pollables[n] = wasmproc_process_spawn_method_child_subscribe(
                    wasmproc_process_spawn_borrow_child(running[i].child));
                src_job[n] = i;
                src_is_stdout[n++] = false;
            }
        }
        for (size_t i = 0; i < n; i++) borrows[i] = wasi_io_poll_borrow_pollable(pollables[i]);
        wasi_io_poll_list_borrow_pollable_t list = {borrows, n};
        guest_list_u32_t ready;
        wasi_io_poll_poll(&list, &ready);
        for (size_t i = 0; i < n; i++) wasi_io_poll_pollable_drop_own(pollables[i]);

        for (size_t r = 0; r < ready.len; r++) {
            job_t *job = &running[src_job[ready.ptr[r]]];
            if (src_is_stdout[ready.ptr[r]]) {
                guest_list_u8_t bytes;
                wasi_io_streams_stream_error_t serr;
                if (wasi_io_streams_method_input_stream_read(
                        wasi_io_streams_borrow_input_stream(job->stdout_), 65536, &bytes, &serr)) {
                    job->out = realloc(job->out, job->out_len + bytes.len + 1);
                    memcpy(job->out + job->out_len, bytes.ptr, bytes.len);
                    job->out_len += bytes.len;
                    guest_list_u8_free(&bytes);
                } else {
                    if (serr.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED)
                        wasi_io_error_error_drop_own(serr.val.last_operation_failed);
                    wasi_io_streams_input_stream_drop_own(job->stdout_);
                    job->has_stdout = false;
                }
            } else {
                wasmproc_process_spawn_option_termination_t status;
                wasmproc_process_spawn_error_code_t err;
                if (wasmproc_process_spawn_method_child_try_wait(
                        wasmproc_process_spawn_borrow_child(job->child), &status, &err)) {
                    if (status.is_some) {
                        job->exited = true;
                        job->status = status.val.status;
                        wasmproc_process_types_termination_free(&status.val);
                    }
                } else {
                    wasmproc_process_spawn_error_code_free(&err);
                }
            }
        }
        guest_list_u32_free(&ready);

        /* Finished: stdout at its end and the child exited. */
        for (size_t i = 0; i < nrunning;) {
            job_t *job = &running[i];
            if (job->has_stdout || !job->exited) {
                i++;
                continue;
            }
            wasmproc_process_spawn_child_drop_own(job->child);
            size_t start = 0, end = job->out_len;
            while (start < end && is_space(job->out[start])) start++;
            while (end > start && is_space(job->out[end - 1])) end--;
            char suffix[32] = "";
            if (job->status.tag == WASMPROC_PROCESS_TYPES_EXIT_STATUS_EXITED && job->status.val.exited != 0)
                snprintf(suffix, sizeof suffix, " [exited %u]", job->status.val.exited);
            else if (job->status.tag == WASMPROC_PROCESS_TYPES_EXIT_STATUS_SIGNALED)
                snprintf(suffix, sizeof suffix, " [signaled %u]", job->status.val.signaled);
            char *line = malloc(end - start + sizeof suffix);
            memcpy(line, job->out + start, end - start);
            strcpy(line + (end - start), suffix);
            free(job->out);
            done[ndone].name = job->name;
            done[ndone++].line = line;
            running[i] = running[--nrunning];
        }
    }

    qsort(done, ndone, sizeof *done, by_result_name);
    for (size_t i = 0; i < ndone; i++) printf("%s: %s\n", done[i].name, done[i].line);
    printf("%zu files, at most %zu at once\n", total, most);
    return 0;
}
