// OpenSSL for Swift. Several of the calls we need are function-like macros in OpenSSL 3
// (SSL_CTX_set_min_proto_version, BIO_get_mem_data, …), which Swift cannot import; these
// inline functions give them a callable form.
#ifndef IOTHUB_SIDECAR_COPENSSL_SHIM_H
#define IOTHUB_SIDECAR_COPENSSL_SHIM_H
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static inline int iothub_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline int iothub_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

static inline long iothub_ssl_ctx_add0_chain_cert(SSL_CTX *ctx, X509 *certificate) {
    return SSL_CTX_add0_chain_cert(ctx, certificate);
}

static inline void iothub_ssl_ctx_set_read_ahead(SSL_CTX *ctx, int yes) {
    SSL_CTX_set_read_ahead(ctx, yes);
}

static inline long iothub_bio_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

// STACK_OF(X509) is handled through macros in OpenSSL 3.
static inline STACK_OF(X509) *iothub_sk_x509_new_null(void) {
    return sk_X509_new_null();
}

static inline int iothub_sk_x509_push(STACK_OF(X509) *stack, X509 *certificate) {
    return sk_X509_push(stack, certificate);
}

static inline void iothub_sk_x509_pop_free(STACK_OF(X509) *stack) {
    sk_X509_pop_free(stack, X509_free);
}

#endif
