/* The floor of a sidecar POST /messages: one MQTT QoS-1 publish and its PUBACK, one at a time,
 * over TLS, by libmosquitto in threaded mode (as the sidecar's client uses it), with no HTTP and
 * no Swift in the way. Prints {"rate": …, "p50": …, "p99": …} (milliseconds) as one JSON line.
 *
 *   mqtt-rtt HOST PORT CAFILE CLIENT_ID COUNT [USERNAME PASSWORD]
 *
 * Built and run by bench/compare.py; a benchmark, not a test. */
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int connected = -1;
static int acknowledged = -1;

static void on_connect(struct mosquitto *client, void *context, int code) {
    (void)client; (void)context;
    pthread_mutex_lock(&lock);
    connected = code;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_publish(struct mosquitto *client, void *context, int mid) {
    (void)client; (void)context;
    pthread_mutex_lock(&lock);
    acknowledged = mid;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 8) {
        fprintf(stderr, "usage: mqtt-rtt HOST PORT CAFILE CLIENT_ID COUNT [USERNAME PASSWORD]\n");
        return 2;
    }
    const char *host = argv[1], *cafile = argv[3], *client_id = argv[4];
    int port = atoi(argv[2]), count = atoi(argv[5]);
    mosquitto_lib_init();
    struct mosquitto *client = mosquitto_new(client_id, true, NULL);
    if (client == NULL) return 1;
    mosquitto_int_option(client, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (argc == 8) mosquitto_username_pw_set(client, argv[6], argv[7]);
    if (mosquitto_tls_set(client, cafile, NULL, NULL, NULL, NULL) != MOSQ_ERR_SUCCESS) return 1;
    mosquitto_connect_callback_set(client, on_connect);
    mosquitto_publish_callback_set(client, on_publish);
    if (mosquitto_connect(client, host, port, 60) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt-rtt: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    mosquitto_loop_start(client);
    pthread_mutex_lock(&lock);
    while (connected < 0) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    if (connected != 0) {
        fprintf(stderr, "mqtt-rtt: CONNACK %d\n", connected);
        return 1;
    }
    char topic[256];
    snprintf(topic, sizeof topic, "devices/%s/messages/events/", client_id);
    const char *body = "{\"seq\":1,\"temperature\":21.5}";
    double *durations = calloc((size_t)count, sizeof(double));
    if (durations == NULL) return 1;
    double started = now();
    for (int i = 0; i < count; i++) {
        int mid = 0;
        double t = now();
        pthread_mutex_lock(&lock);
        if (mosquitto_publish(client, &mid, topic, (int)strlen(body), body, 1, false) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqtt-rtt: publish failed\n");
            return 1;
        }
        while (acknowledged != mid) pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        durations[i] = now() - t;
    }
    double elapsed = now() - started;
    qsort(durations, (size_t)count, sizeof(double), compare);
    printf("{\"rate\": %.1f, \"p50\": %.4f, \"p99\": %.4f}\n", count / elapsed, durations[count / 2] * 1000,
           durations[(int)(count * 0.99)] * 1000);
    mosquitto_disconnect(client);
    mosquitto_loop_stop(client, false);
    mosquitto_destroy(client);
    mosquitto_lib_cleanup();
    free(durations);
    return 0;
}
