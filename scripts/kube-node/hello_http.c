/* A tiny HTTP server for the cluster smoke test: answers every request on PORT (default 8080)
 * with "hello from <hostname>", so a test can tell which pod a Service routed it to. Built
 * static so the image is this one file; exits on SIGTERM like a well-behaved container. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

/* Read until the end of the request head, a full buffer or a quiet peer: enough for GET. */
static void read_request_head(int connection) {
    char buffer[4096];
    size_t used = 0;
    while (used < sizeof(buffer) - 1) {
        ssize_t got = read(connection, buffer + used, sizeof(buffer) - 1 - used);
        if (got <= 0) {
            return;
        }
        used += (size_t)got;
        buffer[used] = '\0';
        if (strstr(buffer, "\r\n\r\n") != NULL) {
            return;
        }
    }
}

int main(void) {
    struct sigaction on_stop = {.sa_handler = stop};
    sigaction(SIGINT, &on_stop, NULL);
    sigaction(SIGTERM, &on_stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *port_text = getenv("PORT");
    int port = port_text != NULL ? atoi(port_text) : 8080;
    char hostname[256] = "unknown";
    gethostname(hostname, sizeof(hostname) - 1);
    char body[300];
    int body_length = snprintf(body, sizeof(body), "hello from %s\n", hostname);
    char response[512];
    int response_length = snprintf(response, sizeof(response),
                                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                   "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                                   body_length, body);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                                  .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(listener, (struct sockaddr *)&address, sizeof(address)) != 0 || listen(listener, 64) != 0) {
        perror("hello-http: listen");
        return EXIT_FAILURE;
    }
    fprintf(stderr, "hello-http: %s listening on port %d\n", hostname, port);
    /* One request at a time, each bounded by a receive timeout: a stalled client delays the
     * next one by at most that long. */
    struct timeval receive_timeout = {.tv_sec = 5};
    for (;;) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) {
            continue;
        }
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof(receive_timeout));
        read_request_head(connection);
        ssize_t ignored = write(connection, response, (size_t)response_length);
        (void)ignored;
        close(connection);
    }
}
