#include "dataplane/common/status.h"

#include <gtest/gtest.h>

#include "dataplane/common/result.h"

namespace braid::common {
namespace {

TEST(StatusTest, OkAndNoResourceCarryNoMessage) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  EXPECT_TRUE(ok.message().empty());
  Status busy = Status::NoResource();
  EXPECT_FALSE(busy.ok());
  EXPECT_EQ(busy.code(), StatusCode::kNoResource);
  EXPECT_TRUE(busy.message().empty());
  EXPECT_EQ(busy.ToString(), "NoResource");
  // OK and back-pressure are a code and an empty pointer: nothing to free.
  EXPECT_LE(sizeof(Status), 2 * sizeof(void*));
}

TEST(StatusTest, ErrorsKeepCodeMessageAndContext) {
  Status s = Status::InvalidArgument("fragment_size is 0");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ToString(), "InvalidArgument: fragment_size is 0");
  Status c = s.WithContext("CreateVirtualQp");
  EXPECT_EQ(c.message(), "CreateVirtualQp: fragment_size is 0");
  EXPECT_EQ(c.code(), s.code());
  Status copy = c;
  EXPECT_EQ(copy, c);
  Status moved = std::move(copy);
  EXPECT_EQ(moved, c);
}

TEST(StatusTest, FromErrnoMapsCodeAndKeepsText) {
  Status s = Status::FromErrno(EINVAL, "ibv_modify_qp(RTR)");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ibv_modify_qp(RTR)"), std::string_view::npos);
  EXPECT_NE(s.message().find("errno=22"), std::string_view::npos);
  EXPECT_EQ(Status::FromErrno(ENODEV, "x").code(), StatusCode::kNotFound);
}

Result<int> Half(int v) {
  if (v % 2 != 0) return Status::InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int* out) {
  BRAID_ASSIGN_OR_RETURN(int h, Half(v));
  *out = h;
  return Status::Ok();
}

TEST(ResultTest, ValueOrStatusAndMacros) {
  Result<int> r = Half(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 4);
  Result<int> e = Half(3);
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().message(), "odd");
  int out = 0;
  EXPECT_TRUE(UseHalf(10, &out).ok());
  EXPECT_EQ(out, 5);
  EXPECT_EQ(UseHalf(7, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out, 5);
}

}  // namespace
}  // namespace braid::common
