# Project-wide warning and sanitizer flags.
add_compile_options(-Wall -Wextra -Werror -Wno-missing-field-initializers)
if(BRAID_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
