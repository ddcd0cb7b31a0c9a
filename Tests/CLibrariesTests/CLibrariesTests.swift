import CCurl
import CMosquitto
import COpenSSL
import Testing

/// The system-library targets link and their shims work: one real call into each library.
@Suite struct CLibrariesTests {
    @Test func libmosquittoIsVersion2() {
        var major: Int32 = 0
        var minor: Int32 = 0
        var revision: Int32 = 0
        mosquitto_lib_version(&major, &minor, &revision)
        #expect(major == 2)
        #expect(mosquitto_lib_init() == Int32(MOSQ_ERR_SUCCESS.rawValue))
        let handle = mosquitto_new("link-test", true, nil)
        #expect(handle != nil)
        mosquitto_destroy(handle)
        mosquitto_lib_cleanup()
    }

    @Test func libcurlHasTLSAndTheSetoptShimsWork() throws {
        let info = try #require(iothub_curl_version_info())
        #expect(info.pointee.features & CURL_VERSION_SSL != 0)
        let handle = try #require(curl_easy_init())
        defer { curl_easy_cleanup(handle) }
        #expect(iothub_curl_setopt_string(handle, CURLOPT_URL, "https://127.0.0.1:1/") == CURLE_OK)
        #expect(iothub_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, 500) == CURLE_OK)
        // Nothing listens on port 1: the transfer must fail to connect, not hang.
        #expect(curl_easy_perform(handle) == CURLE_COULDNT_CONNECT)
        var code = 0
        #expect(iothub_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK)
        #expect(code == 0)
    }

    @Test func openSSLIsVersion3AndTheMacroShimsWork() throws {
        #expect(OpenSSL_version_num() >> 28 == 3)
        let context = try #require(SSL_CTX_new(TLS_client_method()))
        defer { SSL_CTX_free(context) }
        #expect(iothub_ssl_ctx_set_min_proto_version(context, TLS1_2_VERSION) == 1)

        let bio = try #require(BIO_new(BIO_s_mem()))
        defer { BIO_free(bio) }
        #expect(BIO_write(bio, "pem", 3) == 3)
        var data: UnsafeMutablePointer<CChar>?
        #expect(iothub_bio_get_mem_data(bio, &data) == 3)
    }
}
