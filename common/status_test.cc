// Status and Result<T>: codes, messages, and access to a value or an error.

#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

namespace sb {
namespace {

TEST(StatusTest, DefaultAndOkAreOkWithNoMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_TRUE(Status::Ok().ok());
  EXPECT_EQ(Status::Ok().code(), Status::Code::kOk);
}

TEST(StatusTest, EachNamedConstructorCarriesItsCodeAndMessage) {
  struct Case {
    Status status;
    Status::Code code;
  };
  Case cases[] = {
      {Status::InvalidConfig("a.yaml:3:5: key 'x': bad"), Status::Code::kInvalidConfig},
      {Status::IoError("a.yaml:3:5: key 'x': bad"), Status::Code::kIoError},
      {Status::NotFound("a.yaml:3:5: key 'x': bad"), Status::Code::kNotFound},
      {Status::Refused("a.yaml:3:5: key 'x': bad"), Status::Code::kRefused},
      {Status::Internal("a.yaml:3:5: key 'x': bad"), Status::Code::kInternal},
  };
  for (const Case& c : cases) {
    EXPECT_FALSE(c.status.ok());
    EXPECT_EQ(c.status.code(), c.code);
    EXPECT_EQ(c.status.message(), "a.yaml:3:5: key 'x': bad");
  }
  // An error with an empty message is still an error.
  EXPECT_FALSE(Status::Internal("").ok());
}

TEST(StatusTest, CopiesAndMovesKeepCodeAndMessage) {
  Status a = Status::NotFound("no such child 'x'");
  Status b = a;
  EXPECT_EQ(b.code(), Status::Code::kNotFound);
  EXPECT_EQ(b.message(), "no such child 'x'");
  Status c = std::move(a);
  EXPECT_EQ(c.code(), Status::Code::kNotFound);
  EXPECT_EQ(c.message(), "no such child 'x'");
}

TEST(ResultTest, AValueIsOkAndReachableEveryWay) {
  Result<std::string> r = std::string("hello");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.status().ok());
  EXPECT_EQ(r.status().code(), Status::Code::kOk);
  EXPECT_EQ(r.value(), "hello");
  EXPECT_EQ(*r, "hello");
  EXPECT_EQ(r->size(), 5u);
  r.value() += "!";
  EXPECT_EQ(r.value(), "hello!");
  const Result<std::string>& cr = r;
  EXPECT_EQ(cr.value(), "hello!");
  EXPECT_EQ(cr->size(), 6u);
  std::string moved = std::move(r).value();
  EXPECT_EQ(moved, "hello!");
}

TEST(ResultTest, AnErrorIsNotOkAndKeepsItsStatus) {
  Result<int> r = Status::IoError("unable to bind to 127.0.0.1:1: Permission denied");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIoError);
  EXPECT_EQ(r.status().message(), "unable to bind to 127.0.0.1:1: Permission denied");
}

TEST(ResultTest, MoveOnlyValuesCanBeTakenOut) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(42);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(**r, 42);
  std::unique_ptr<int> p = std::move(r).value();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 42);
}

TEST(ResultTest, AResultCanHoldAStatusAsAnError) {
  // A function returning Result<T> passes another call's error on as it is.
  auto inner = []() -> Result<int> { return Status::Refused("draining"); };
  auto outer = [&]() -> Result<std::string> {
    Result<int> r = inner();
    if (!r.ok()) return r.status();
    return std::to_string(r.value());
  };
  Result<std::string> r = outer();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kRefused);
  EXPECT_EQ(r.status().message(), "draining");
}

}  // namespace
}  // namespace sb
