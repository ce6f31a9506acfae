/* libpri on one end of a SOCK_SEQPACKET socketpair, for spanbridge's Q.921/Q.931 interop tests.
 *
 * Usage: libpri_peer FD network|user euro|ni2|5ess|dms100
 * FD is the harness's end of the socketpair (inherited). Commands arrive on stdin, one per line:
 *   call CHAN CALLED CALLING COMPLETE(0|1)   place a call (prints "CALL IDX")
 *   callx CHAN CALLED CALLING NAME REDIRECTING REASON   the same with a calling name and a
 *                                            redirecting number (complete)
 *   proceed IDX | setupack IDX | alert IDX | answer IDX
 *   hangup IDX CAUSE | info IDX DIGITS | notify IDX INFO | restart CHAN | quit
 * Events go to stdout, one per line (see printf calls below). On a DAHDI D-channel, a pending
 * channel event (reads fail with ELAST until it is taken) is taken with DAHDI_GETEVENT and
 * printed as "DAHDI_EVENT N" (4 = alarm, 5 = no alarm), as chan_dahdi would. */
#include <errno.h>
#include <libpri.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_CALLS 128
/* DAHDI_GETEVENT from dahdi/user.h: _IOR(DAHDI_CODE, 8, int); not used on socketpairs. */
#define PEER_DAHDI_GETEVENT _IOR(0xDA, 8, int)
static q931_call *calls[MAX_CALLS];
static int ncalls;

static int call_index(q931_call *c) {
    for (int i = 0; i < ncalls; i++)
        if (calls[i] == c) return i;
    if (ncalls < MAX_CALLS) { calls[ncalls] = c; return ncalls++; }
    return -1;
}

static q931_call *call_at(int idx) { return (idx >= 0 && idx < ncalls) ? calls[idx] : NULL; }

static void quiet(struct pri *pri, char *s) { (void)pri; fprintf(stderr, "%s", s); }

static void handle_event(struct pri *pri, pri_event *e) {
    switch (e->e) {
    case PRI_EVENT_DCHAN_UP: printf("UP\n"); break;
    case PRI_EVENT_DCHAN_DOWN: printf("DOWN\n"); break;
    case PRI_EVENT_RING:
        printf("RING %d %d %s %s %d\n", call_index(e->ring.call), e->ring.channel & 0xff,
               e->ring.callednum[0] ? e->ring.callednum : "-",
               e->ring.callingnum[0] ? e->ring.callingnum : "-", e->ring.complete);
        if (e->ring.redirectingnum[0])
            printf("REDIR %d %s %d\n", call_index(e->ring.call), e->ring.redirectingnum,
                   e->ring.redirectingreason);
        if (e->ring.callingname[0])
            printf("NAME %d %s\n", call_index(e->ring.call), e->ring.callingname);
        break;
    case PRI_EVENT_NOTIFY:
        printf("NOTIFY %d %d\n", call_index(e->notify.call), e->notify.info);
        break;
    case PRI_EVENT_PROCEEDING:
        printf("PROCEEDING %d %d\n", call_index(e->proceeding.call), e->proceeding.channel & 0xff);
        break;
    case PRI_EVENT_SETUP_ACK:
        printf("SETUP_ACK %d %d\n", call_index(e->setup_ack.call), e->setup_ack.channel & 0xff);
        break;
    case PRI_EVENT_RINGING:
        printf("RINGING %d %d\n", call_index(e->ringing.call), e->ringing.progressmask);
        break;
    case PRI_EVENT_ANSWER: printf("ANSWER %d\n", call_index(e->answer.call)); break;
    case PRI_EVENT_HANGUP_REQ:
        printf("HANGUP_REQ %d %d\n", call_index(e->hangup.call), e->hangup.cause);
        pri_hangup(pri, e->hangup.call, e->hangup.cause);
        break;
    case PRI_EVENT_HANGUP:
        printf("HANGUP %d %d\n", call_index(e->hangup.call), e->hangup.cause);
        pri_hangup(pri, e->hangup.call, e->hangup.cause);
        break;
    case PRI_EVENT_HANGUP_ACK:
        printf("HANGUP_ACK %d %d\n", call_index(e->hangup.call), e->hangup.cause);
        break;
    case PRI_EVENT_INFO_RECEIVED:
        printf("INFO %d %s\n", call_index(e->ring.call), e->ring.callednum);
        break;
    case PRI_EVENT_RESTART: printf("RESTART %d\n", e->restart.channel & 0xff); break;
    case PRI_EVENT_RESTART_ACK: printf("RESTART_ACK %d\n", e->restartack.channel & 0xff); break;
    case PRI_EVENT_CONFIG_ERR: printf("CONFIG_ERR %s\n", e->err.err); break;
    default: printf("EVENT %d\n", e->e); break;
    }
}

static void command(struct pri *pri, char *line, int *done) {
    char verb[32], a[64], b[64];
    int idx = -1, n = 0, chan = 0, complete = 1;
    if (sscanf(line, "%31s", verb) != 1) return;
    if (!strcmp(verb, "call") && sscanf(line, "%*s %d %63s %63s %d", &chan, a, b, &complete) == 4) {
        q931_call *c = pri_new_call(pri);
        struct pri_sr *sr = pri_sr_new();
        pri_sr_set_channel(sr, chan, 1, 0);
        pri_sr_set_bearer(sr, PRI_TRANS_CAP_SPEECH, PRI_LAYER_1_ALAW);
        pri_sr_set_called(sr, a, PRI_UNKNOWN, complete);
        pri_sr_set_caller(sr, b, NULL, PRI_UNKNOWN, PRI_PRES_ALLOWED);
        int rc = pri_setup(pri, c, sr);
        pri_sr_free(sr);
        printf("CALL %d %d\n", call_index(c), rc);
    } else if (!strcmp(verb, "callx")) {
        char name[64], redir[64];
        int reason = 0;
        if (sscanf(line, "%*s %d %63s %63s %63s %63s %d", &chan, a, b, name, redir, &reason) != 6) {
            printf("ERROR bad line %s", line);
            return;
        }
        q931_call *c = pri_new_call(pri);
        struct pri_sr *sr = pri_sr_new();
        pri_sr_set_channel(sr, chan, 1, 0);
        pri_sr_set_bearer(sr, PRI_TRANS_CAP_SPEECH, PRI_LAYER_1_ALAW);
        pri_sr_set_called(sr, a, PRI_UNKNOWN, 1);
        pri_sr_set_caller(sr, b, name, PRI_UNKNOWN, PRI_PRES_ALLOWED);
        pri_sr_set_redirecting(sr, redir, PRI_UNKNOWN, PRI_PRES_ALLOWED, reason);
        int rc = pri_setup(pri, c, sr);
        pri_sr_free(sr);
        printf("CALL %d %d\n", call_index(c), rc);
    } else if (sscanf(line, "%*s %d %n", &idx, &n) >= 1) {
        q931_call *c = call_at(idx);
        if (!strcmp(verb, "restart")) { printf("RESET %d\n", pri_reset(pri, idx)); fflush(stdout); return; }
        if (!c) { printf("ERROR no call %d\n", idx); return; }
        if (!strcmp(verb, "proceed")) pri_proceeding(pri, c, 0, 0);
        else if (!strcmp(verb, "setupack")) pri_need_more_info(pri, c, 0, 0);
        else if (!strcmp(verb, "alert")) pri_acknowledge(pri, c, 0, 1);
        else if (!strcmp(verb, "answer")) pri_answer(pri, c, 0, 0);
        else if (!strcmp(verb, "hangup")) pri_hangup(pri, c, atoi(line + n));
        else if (!strcmp(verb, "notify")) printf("NOTIFIED %d\n", pri_notify(pri, c, 0, atoi(line + n)));
        else if (!strcmp(verb, "info")) { for (char *d = line + n; *d >= '0' && *d <= '9'; d++) pri_information(pri, c, *d); }
        else printf("ERROR unknown command %s\n", verb);
    } else if (!strcmp(verb, "quit")) {
        *done = 1;
    } else {
        printf("ERROR bad line %s", line);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s FD network|user euro|ni2|5ess|dms100\n", argv[0]); return 2; }
    int fd = atoi(argv[1]);
    int node = !strcmp(argv[2], "network") ? PRI_NETWORK : PRI_CPE;
    int sw = !strcmp(argv[3], "ni2")      ? PRI_SWITCH_NI2
             : !strcmp(argv[3], "5ess")   ? PRI_SWITCH_LUCENT5E
             : !strcmp(argv[3], "dms100") ? PRI_SWITCH_DMS100
                                          : PRI_SWITCH_EUROISDN_E1;
    pri_set_error(quiet);
    pri_set_message(quiet);
    struct pri *pri = pri_new(fd, node, sw);
    if (!pri) { printf("ERROR pri_new\n"); return 1; }
    /* Names travel in the display element where the switch allows it. */
    pri_display_options_send(pri, PRI_DISPLAY_OPTION_NAME_INITIAL);
    pri_display_options_receive(pri, PRI_DISPLAY_OPTION_NAME_INITIAL);
    if (getenv("LIBPRI_DEBUG")) pri_set_debug(pri, PRI_DEBUG_Q921_STATE | PRI_DEBUG_Q931_DUMP);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY\n");
    char line[4096];
    size_t used = 0;
    int done = 0;
    while (!done) {
        struct pollfd fds[2] = {{fd, POLLIN | POLLPRI, 0}, {0, POLLIN, 0}};
        int timeout = 1000;
        struct timeval *next = pri_schedule_next(pri);
        if (next) {
            struct timeval now;
            gettimeofday(&now, NULL);
            long ms = (next->tv_sec - now.tv_sec) * 1000 + (next->tv_usec - now.tv_usec) / 1000;
            timeout = ms < 0 ? 0 : (ms > 1000 ? 1000 : (int)ms);
        }
        int r = poll(fds, 2, timeout);
        if (r < 0 && errno != EINTR) break;
        if (r > 0 && (fds[0].revents & POLLPRI)) {
            int ev = 0;
            if (ioctl(fd, PEER_DAHDI_GETEVENT, &ev) == 0 && ev) printf("DAHDI_EVENT %d\n", ev);
        }
        pri_event *e = NULL;
        if (r > 0 && (fds[0].revents & POLLIN)) e = pri_check_event(pri);
        else if (r > 0 && (fds[0].revents & (POLLHUP | POLLERR))) break;
        if (e) handle_event(pri, e);
        next = pri_schedule_next(pri);
        if (next) {
            struct timeval now;
            gettimeofday(&now, NULL);
            if (timercmp(&now, next, >=) && (e = pri_schedule_run(pri))) handle_event(pri, e);
        }
        if (r > 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
            /* read(2), not stdio: stdio would buffer lines that poll(2) never reports. */
            ssize_t got = read(0, line + used, sizeof line - 1 - used);
            if (got <= 0) break;
            used += (size_t)got;
            line[used] = 0;
            char *nl;
            while (!done && (nl = strchr(line, '\n'))) {
                *nl = 0;
                command(pri, line, &done);
                used -= (size_t)(nl + 1 - line);
                memmove(line, nl + 1, used + 1);
            }
            if (used == sizeof line - 1) used = 0; /* an overlong line is dropped */
        }
        fflush(stdout);
    }
    printf("EXIT\n");
    return 0;
}
