/* master.c — the process that owns the listening sockets and the lifetime
 * of the serving process, so that configuration reloads and binary upgrades
 * never drop a connection (nginx's master/worker split, reduced to what a
 * gateway needs).
 *
 *   shade serve -c FILE          master: validate, bind, spawn, supervise
 *     └─ shade serve (child)     serving process: worker threads (server.c)
 *
 * The listening sockets are opened once, by the master, and handed to every
 * serving process it starts (fds 3..3+n-1, SHADE_LISTEN_FDS=n).  Because the
 * sockets themselves never close, a connection waiting in the accept queue
 * during a switch is accepted by whichever process is listening.
 *
 *   SIGHUP   load and validate the file again; start a new serving process
 *            with it; when that one reports ready (a byte on SHADE_READY_FD),
 *            SIGTERM the old one, which drains: requests and streams in
 *            flight finish on the old configuration.  An invalid file, or a
 *            new process that fails to start, leaves the old one serving.
 *   SIGUSR2  binary upgrade: exec the binary on disk (same PID, same sockets,
 *            the running serving process kept), then reload as for SIGHUP.
 *   SIGUSR1  reopen the access log (log rotation): passed on to every
 *            serving process, each reopens its file.
 *   SIGTERM  close the sockets, SIGTERM the serving process(es), wait, exit.
 *   a serving process that dies unexpectedly is restarted (at most once a
 *            second).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "master.h"

#include "config.h"
#include "log.h"
#include "state.h"

#define MAX_LISTENERS 256
#define READY_TIMEOUT_MS 30000

struct master {
    char **argv;                 /* to start serving processes and re-exec */
    char self[PATH_MAX];         /* the binary's path on disk (for upgrades) */
    const char *config_path;
    int fds[MAX_LISTENERS];
    int nfds;
    int state_fd;                /* the shared state segment (state.h), -1 none */
    pid_t current;               /* the serving process taking new connections */
    pid_t draining[64];          /* earlier ones finishing their requests */
    int ndraining;
    uint64_t last_restart_ms;
};

static void forget(struct master *m, pid_t p)
{
    for (int i = 0; i < m->ndraining; i++)
        if (m->draining[i] == p)
            m->draining[i] = m->draining[--m->ndraining];
}

/* The signals the master takes with sigwaitinfo (blocked otherwise). */
static void master_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR2);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGCHLD);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int open_listener(const struct config_server *s)
{
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* one socket per worker thread: the kernel spreads connections */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)&s->addr, s->addrlen) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static size_t worker_count(const struct config *cfg)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n = cfg->server.workers ? cfg->server.workers : (size_t)(ncpu > 0 ? ncpu : 1);
    return n > MAX_LISTENERS ? MAX_LISTENERS : n;
}

/* Start a serving process with the listeners; wait until it is ready.
 * Returns its pid, or -1 (it is then stopped and reaped). */
static pid_t spawn(struct master *m)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        log_error("reload: pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("cannot start a serving process: %s", strerror(errno));
        close(ready[0]);
        close(ready[1]);
        return -1;
    }
    if (pid == 0) {
        /* child: listeners at 3..3+n-1, the ready pipe after them.  Move
         * everything above the target range first so no dup2 clobbers a
         * descriptor still to be moved. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int base = 3 + m->nfds + 2;
        int hi[MAX_LISTENERS + 2];
        for (int i = 0; i < m->nfds; i++)
            hi[i] = fcntl(m->fds[i], F_DUPFD, base);
        hi[m->nfds] = fcntl(ready[1], F_DUPFD, base);
        int nmove = m->nfds + 1;
        if (m->state_fd >= 0)
            hi[nmove++] = fcntl(m->state_fd, F_DUPFD, base);
        for (int i = 0; i < nmove; i++)
            if (hi[i] < 0 || dup2(hi[i], 3 + i) < 0)
                _exit(127);
        char n[16], rfd[16], sfd[16];
        snprintf(n, sizeof n, "%d", m->nfds);
        snprintf(rfd, sizeof rfd, "%d", 3 + m->nfds);
        snprintf(sfd, sizeof sfd, "%d", 4 + m->nfds);
        setenv("SHADE_LISTEN_FDS", n, 1);
        setenv("SHADE_READY_FD", rfd, 1);
        if (m->state_fd >= 0)
            setenv("SHADE_STATE_FD", sfd, 1);
        /* a log rotation signal before the serving process has set up its
         * own handling must not kill it: SIGUSR1 stays blocked (pending) */
        sigset_t keep;
        sigemptyset(&keep);
        sigaddset(&keep, SIGUSR1);
        sigprocmask(SIG_SETMASK, &keep, NULL);
        execv(m->self, m->argv);
        _exit(127);
    }
    close(ready[1]);
    struct pollfd pfd = { .fd = ready[0], .events = POLLIN };
    char b = 0;
    int rc;
    do
        rc = poll(&pfd, 1, READY_TIMEOUT_MS);
    while (rc < 0 && errno == EINTR);
    bool ok = rc == 1 && read(ready[0], &b, 1) == 1 && b == 'R';
    close(ready[0]);
    if (!ok) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

static void reload(struct master *m)
{
    struct config *cfg = NULL;
    char err[1024];
    if (config_load(m->config_path, &cfg, err, sizeof err) < 0) {
        log_error("reload refused, still serving the previous configuration: %s", err);
        return;
    }
    /* the sockets are kept across reloads; moving them needs a restart */
    int fd0 = m->fds[0];
    struct sockaddr_storage cur;
    socklen_t cl = sizeof cur;
    bool same = getsockname(fd0, (struct sockaddr *)&cur, &cl) == 0 && cl == cfg->server.addrlen &&
                memcmp(&cur, &cfg->server.addr, cl) == 0;
    config_free(cfg);
    if (!same) {
        log_error("reload refused: server.listen cannot change on reload (restart to move it)");
        return;
    }
    pid_t pid = spawn(m);
    if (pid < 0) {
        log_error("reload failed: the new serving process did not start; still serving the previous one");
        return;
    }
    pid_t old = m->current;
    m->current = pid;
    if (old > 0) {
        kill(old, SIGTERM); /* drains: requests in flight finish on the old configuration */
        if (m->ndraining < (int)(sizeof m->draining / sizeof m->draining[0]))
            m->draining[m->ndraining++] = old;
    }
    log_info("reloaded %s: serving process %d replaces %d", m->config_path, (int)pid, (int)old);
}

static void upgrade(struct master *m)
{
    /* exec the binary on disk in place: same PID, the sockets (not
     * close-on-exec for this) and the running serving process survive */
    char fds[16], cur[16];
    snprintf(fds, sizeof fds, "%d", m->nfds);
    snprintf(cur, sizeof cur, "%d", (int)m->current);
    if (m->state_fd >= 0 && m->state_fd < 3 + m->nfds) { /* out of the listeners' range */
        int hi = fcntl(m->state_fd, F_DUPFD_CLOEXEC, 3 + m->nfds);
        if (hi >= 0) {
            close(m->state_fd);
            m->state_fd = hi;
        }
    }
    for (int i = 0; i < m->nfds; i++) {
        if (m->fds[i] != 3 + i) {
            if (dup2(m->fds[i], 3 + i) < 0)
                goto fail;
            close(m->fds[i]);
            m->fds[i] = 3 + i;
        }
        fcntl(m->fds[i], F_SETFD, 0);
    }
    setenv("SHADE_MASTER_FDS", fds, 1);
    setenv("SHADE_MASTER_CHILD", cur, 1);
    char sfd[16];
    if (m->state_fd >= 0) { /* the limits survive the upgrade when the new binary can read them */
        fcntl(m->state_fd, F_SETFD, 0);
        snprintf(sfd, sizeof sfd, "%d", m->state_fd);
        setenv("SHADE_MASTER_STATE_FD", sfd, 1);
    }
    log_info("upgrading: executing %s", m->self);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(m->self, m->argv);
fail:
    log_error("upgrade failed (%s); still running the current binary", strerror(errno));
    for (int i = 0; i < m->nfds; i++)
        fcntl(m->fds[i], F_SETFD, FD_CLOEXEC);
    sigset_t set;
    master_signals(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    unsetenv("SHADE_MASTER_FDS");
    unsetenv("SHADE_MASTER_CHILD");
    unsetenv("SHADE_MASTER_STATE_FD");
    if (m->state_fd >= 0)
        fcntl(m->state_fd, F_SETFD, FD_CLOEXEC);
}

static int stop_all(struct master *m, const struct config *cfg)
{
    /* closing our copies first: once the serving processes close theirs,
     * new connections are refused rather than left in a queue */
    for (int i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    m->nfds = 0;
    if (m->current > 0)
        kill(m->current, SIGTERM);
    uint64_t deadline = now_ms() + cfg->server.shutdown_timeout_ms + 5000;
    for (;;) {
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0 && errno == ECHILD)
            return 0;
        if (p > 0) {
            forget(m, p);
            if (p == m->current)
                m->current = 0;
            continue;
        }
        if (now_ms() > deadline) {
            log_warn("serving processes did not stop in time: killing them");
            if (m->current > 0)
                kill(m->current, SIGKILL);
            for (int i = 0; i < m->ndraining; i++)
                kill(m->draining[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0)
                ;
            return 1;
        }
        usleep(10000);
    }
}

int master_run(const char *config_path, char **argv, struct config *cfg)
{
    struct master m = { .argv = argv, .config_path = config_path, .state_fd = -1 };
    log_set_level(cfg->server.log_level);
    if (!realpath("/proc/self/exe", m.self)) {
        log_error("cannot find the running binary: %s", strerror(errno));
        return 1;
    }
    /* the upgrade path comes back here with the sockets and the child */
    const char *inherited = getenv("SHADE_MASTER_FDS");
    if (inherited) {
        m.nfds = atoi(inherited);
        const char *c = getenv("SHADE_MASTER_CHILD");
        m.current = c ? (pid_t)atoi(c) : 0;
        unsetenv("SHADE_MASTER_FDS");
        unsetenv("SHADE_MASTER_CHILD");
        if (m.nfds < 1 || m.nfds > MAX_LISTENERS) {
            log_error("upgrade: bad SHADE_MASTER_FDS");
            return 1;
        }
        for (int i = 0; i < m.nfds; i++) {
            m.fds[i] = 3 + i;
            fcntl(m.fds[i], F_SETFD, FD_CLOEXEC);
        }
    } else {
        size_t n = worker_count(cfg);
        for (size_t i = 0; i < n; i++) {
            int fd = open_listener(&cfg->server);
            if (fd < 0) {
                log_error("cannot listen on %s: %s", cfg->server.listen, strerror(errno));
                for (int k = 0; k < m.nfds; k++)
                    close(m.fds[k]);
                return 1;
            }
            m.fds[m.nfds++] = fd;
        }
    }

    /* the shared state (limits, lockouts) outlives every serving process:
     * kept across an upgrade when the new binary reads its layout */
    const char *sfd = getenv("SHADE_MASTER_STATE_FD");
    if (sfd) {
        int fd = atoi(sfd);
        unsetenv("SHADE_MASTER_STATE_FD");
        if (fd > 2 && st_segment_usable(fd)) {
            m.state_fd = fd;
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        } else {
            if (fd > 2)
                close(fd);
            log_warn("upgrade: the shared state has another layout; limits and lockouts restart");
        }
    }
    if (m.state_fd < 0 && (m.state_fd = st_segment_create(ST_SLOTS_DEFAULT)) < 0)
        log_warn("cannot create the shared state (%s): each serving process keeps its own limits",
                 strerror(errno));

    sigset_t set;
    master_signals(&set);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (inherited) {
        log_info("upgraded binary running; replacing serving process %d", (int)m.current);
        reload(&m);
    } else {
        m.current = spawn(&m);
        if (m.current < 0) {
            log_error("the serving process did not start");
            for (int k = 0; k < m.nfds; k++)
                close(m.fds[k]);
            return 1;
        }
    }

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig == SIGTERM || sig == SIGINT)
            return stop_all(&m, cfg);
        if (sig == SIGHUP) {
            reload(&m);
        } else if (sig == SIGUSR2) {
            upgrade(&m);
        } else if (sig == SIGUSR1) {
            /* log rotation: the draining ones write their last lines too */
            if (m.current > 0)
                kill(m.current, SIGUSR1);
            for (int i = 0; i < m.ndraining; i++)
                kill(m.draining[i], SIGUSR1);
        } else if (sig == SIGCHLD) {
            int status;
            pid_t p;
            while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
                if (p != m.current) {
                    forget(&m, p); /* an old serving process finished draining */
                    continue;
                }
                log_error("serving process %d exited unexpectedly (status %d); restarting", (int)p, status);
                uint64_t t = now_ms();
                if (t - m.last_restart_ms < 1000)
                    usleep(1000000);
                m.last_restart_ms = now_ms();
                m.current = spawn(&m);
                if (m.current < 0) {
                    log_error("cannot restart the serving process; exiting");
                    return stop_all(&m, cfg);
                }
            }
        }
    }
}
