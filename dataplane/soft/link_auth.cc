#include "dataplane/soft/link_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "dataplane/common/random_bytes.h"

namespace braid::soft {

namespace {

std::array<uint8_t, 32> Mac(const verbs::LinkKey& key, const wire::Challenge& challenge,
                            const wire::Hello& hello) {
  wire::Hello fields = hello;
  fields.mac.fill(0);
  wire::HelloBytes bytes;
  wire::EncodeHello(fields, &bytes);
  std::array<uint8_t, wire::kHelloFieldBytes + 24> input;
  std::memcpy(input.data(), bytes.data(), wire::kHelloFieldBytes);
  std::memcpy(input.data() + wire::kHelloFieldBytes, challenge.nonce.data(),
              challenge.nonce.size());
  std::array<uint8_t, 32> mac{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), input.data(), input.size(),
       mac.data(), &len);
  return mac;
}

}  // namespace

wire::Challenge NewChallenge() {
  wire::Challenge c;
  common::RandomBytes(c.nonce.data(), c.nonce.size());
  return c;
}

void SignHello(const verbs::LinkKey& key, const wire::Challenge& challenge, wire::Hello* hello) {
  hello->mac = Mac(key, challenge, *hello);
}

bool HelloAuthentic(const verbs::LinkKey& key, const wire::Challenge& challenge,
                    const wire::Hello& hello) {
  const std::array<uint8_t, 32> want = Mac(key, challenge, hello);
  return CRYPTO_memcmp(want.data(), hello.mac.data(), want.size()) == 0;
}

}  // namespace braid::soft
