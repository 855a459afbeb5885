func.func @uniform() {
  %a = stablehlo.constant dense<-2.0> : tensor<f32>
  %b = stablehlo.constant dense<3.0> : tensor<f32>
  %shape = stablehlo.constant dense<[100, 50]> : tensor<2xi64>
  %r = stablehlo.rng %a, %b, %shape, distribution = UNIFORM : (tensor<f32>, tensor<f32>, tensor<2xi64>) -> tensor<100x50xf32>
  %lo = stablehlo.reduce(%r init: %b) applies stablehlo.minimum across dimensions = [0, 1] : (tensor<100x50xf32>, tensor<f32>) -> tensor<f32>
  check.expect_almost_eq_const %lo, dense<-2.0> : tensor<f32> {tolerance = 0.01 : f64}
  func.return
}
// -----
func.func @normal() {
  %a = stablehlo.constant dense<1.0> : tensor<f32>
  %b = stablehlo.constant dense<2.0> : tensor<f32>
  %shape = stablehlo.constant dense<[101, 99]> : tensor<2xi64>
  %r = stablehlo.rng %a, %b, %shape, distribution = NORMAL : (tensor<f32>, tensor<f32>, tensor<2xi64>) -> tensor<101x99xf32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%r init: %zero) applies stablehlo.add across dimensions = [0, 1] : (tensor<101x99xf32>, tensor<f32>) -> tensor<f32>
  %n = stablehlo.constant dense<9999.0> : tensor<f32>
  %mean = stablehlo.divide %s, %n : tensor<f32>
  check.expect_almost_eq_const %mean, dense<1.0> : tensor<f32> {tolerance = 0.05 : f64}
  func.return
}
// -----
func.func @ints() {
  %a = stablehlo.constant dense<-3> : tensor<i32>
  %b = stablehlo.constant dense<4> : tensor<i32>
  %shape = stablehlo.constant dense<[1000]> : tensor<1xi64>
  %r = stablehlo.rng %a, %b, %shape, distribution = UNIFORM : (tensor<i32>, tensor<i32>, tensor<1xi64>) -> tensor<1000xi32>
  %lo = stablehlo.reduce(%r init: %b) applies stablehlo.minimum across dimensions = [0] : (tensor<1000xi32>, tensor<i32>) -> tensor<i32>
  %hi = stablehlo.reduce(%r init: %a) applies stablehlo.maximum across dimensions = [0] : (tensor<1000xi32>, tensor<i32>) -> tensor<i32>
  check.expect_eq_const %lo, dense<-3> : tensor<i32>
  check.expect_eq_const %hi, dense<3> : tensor<i32>
  func.return
}
