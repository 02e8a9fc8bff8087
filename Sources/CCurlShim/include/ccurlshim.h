#ifndef CCURLSHIM_H
#define CCURLSHIM_H
// Typed wrappers for libcurl's variadic functions, which Swift cannot call.
#include <curl/curl.h>

typedef size_t (*ccurl_data_callback)(char *data, size_t size, size_t nmemb, void *userdata);
typedef int (*ccurl_socket_callback)(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
typedef int (*ccurl_timer_callback)(CURLM *multi, long timeout_ms, void *userp);
typedef int (*ccurl_closesocket_callback)(void *clientp, curl_socket_t item);
typedef curl_socket_t (*ccurl_opensocket_callback)(void *clientp, curlsocktype purpose, struct curl_sockaddr *address);

CURLcode ccurl_easy_setopt_long(CURL *easy, CURLoption option, long value);
CURLcode ccurl_easy_setopt_off(CURL *easy, CURLoption option, curl_off_t value);
CURLcode ccurl_easy_setopt_string(CURL *easy, CURLoption option, const char *value);
CURLcode ccurl_easy_setopt_pointer(CURL *easy, CURLoption option, void *value);
CURLcode ccurl_easy_setopt_slist(CURL *easy, CURLoption option, struct curl_slist *value);
CURLcode ccurl_easy_setopt_data_callback(CURL *easy, CURLoption option, ccurl_data_callback value);
CURLcode ccurl_easy_setopt_closesocket_callback(CURL *easy, ccurl_closesocket_callback value);
CURLcode ccurl_easy_setopt_opensocket_callback(CURL *easy, ccurl_opensocket_callback value);
// Opens the socket curl asks for in its open-socket callback (close-on-exec); -1 on failure.
curl_socket_t ccurl_open_socket(const struct curl_sockaddr *address);

CURLcode ccurl_easy_getinfo_long(CURL *easy, CURLINFO info, long *value);
CURLcode ccurl_easy_getinfo_off(CURL *easy, CURLINFO info, curl_off_t *value);
CURLcode ccurl_easy_getinfo_pointer(CURL *easy, CURLINFO info, void **value);

CURLMcode ccurl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);
CURLMcode ccurl_multi_setopt_pointer(CURLM *multi, CURLMoption option, void *value);
CURLMcode ccurl_multi_setopt_socket_callback(CURLM *multi, ccurl_socket_callback value);
CURLMcode ccurl_multi_setopt_timer_callback(CURLM *multi, ccurl_timer_callback value);

// Fields of CURLMsg (a struct with a union), awkward from Swift.
int ccurl_msg_is_done(const CURLMsg *msg);
CURL *ccurl_msg_easy(const CURLMsg *msg);
CURLcode ccurl_msg_result(const CURLMsg *msg);
#endif
